"""``sim.testing`` without pytest fixtures: the real server, a call, the fake REST API."""

from __future__ import annotations

import aiohttp
import pytest

from sim.caller import CallPlan
from sim.emulator import EmulatorConfig
from sim.emulator.config import SHORT_REPLY_WAV
from sim.testing import fake_twilio_rest, running_emulator, running_server, wait_until
from tests.conftest import TEST_PERSONAS

pytestmark = pytest.mark.e2e

SHORT = SHORT_REPLY_WAV


async def test_running_server_answers_a_call_and_cleans_up() -> None:
    async with (
        # A 2 s greeting (the default is 3.9 s): the call only has to be answered.
        running_emulator(EmulatorConfig(think_ms=20, greeting_wav=SHORT)) as emu,
        running_server(emu, TEST_PERSONAS) as server,
    ):
        res = await server.call(CallPlan().wait_for_greeting(timeout_secs=5).hangup())
        assert res.ok, res.failure
        assert res.greeting_ms is not None and res.audio_received_secs > 0.5
        assert await wait_until(lambda: len(server.calls) == 0, 2.0)
        assert await wait_until(lambda: emu.active_sessions == 0, 2.0)
        url = server.url
    async with aiohttp.ClientSession() as http:  # the port is closed once the block ends
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(f"{url}/healthz")


async def test_fake_twilio_rest_records_call_updates() -> None:
    async with fake_twilio_rest() as fake, aiohttp.ClientSession() as http:
        path = "/2010-04-01/Accounts/AC1/Calls/CA1.json"
        async with http.post(fake.url + path, data={"Status": "completed"}) as resp:
            assert resp.status == 200 and (await resp.json())["sid"] == "CA1"
    assert fake.requests == [{"path": path, "form": {"Status": "completed"}, "auth": None}]


async def test_wait_until_reports_a_timeout() -> None:
    assert await wait_until(lambda: True, 0.0)
    assert not await wait_until(lambda: False, 0.05)
