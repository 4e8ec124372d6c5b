"""Issue 13, attack "operations endpoints": /stats is off the public listener and token-guarded.

The real server started like production (Twilio token and ops token set), in-process: the
public listener answers 404 for ``/stats``; the operations listener wants the bearer token
(401 with ``WWW-Authenticate`` otherwise), logs the refusal once at WARNING without the token,
and shares the public app's live state (a call in progress shows on its ``/livez``).
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from loguru import logger

from sim.caller import CallPlan, place_call
from sim.emulator import EmulatorConfig
from sim.emulator.config import SHORT_REPLY_WAV
from sim.testing import TEST_THINK_MS, wait_until

pytestmark = pytest.mark.e2e

TWILIO_TOKEN = "test-auth-token"
OPS_TOKEN = "ops-secret-7f3a9c"


async def _get(session: aiohttp.ClientSession, url: str, token: str | None = None, **kw):
    headers = {"Authorization": token} if token else {}
    method = kw.pop("method", "GET")
    async with session.request(method, url, headers=headers, **kw) as resp:
        return resp.status, resp.headers.get("WWW-Authenticate"), await resp.text()


async def test_stats_are_gone_from_the_public_listener_and_need_the_token(
    make_emulator, make_server
):
    short = SHORT_REPLY_WAV  # a 2 s greeting: the call only has to be up
    emu = await make_emulator(EmulatorConfig(think_ms=TEST_THINK_MS, greeting_wav=short))
    server = await make_server(emulator=emu, twilio_auth_token=TWILIO_TOKEN, ops_token=OPS_TOKEN)
    assert server.ops_url and server.ops_url != server.url
    lines: list[str] = []
    sink = logger.add(lines.append, level="DEBUG", format="{level} {message}")
    try:
        async with aiohttp.ClientSession() as http:
            # Public listener: no operations endpoints at all; health stays (kubelet probes).
            assert (await _get(http, server.url + "/stats"))[0] == 404
            assert (await _get(http, server.url + "/stats/reset", method="POST"))[0] == 404
            assert (await _get(http, server.url + "/readyz"))[0] == 200

            # Operations listener: no token, a wrong one, another scheme -> 401.
            for bad in (None, "Bearer wrong-token", f"Basic {OPS_TOKEN}", f"Bearer {OPS_TOKEN}x"):
                status, challenge, body = await _get(http, server.ops_url + "/stats", bad)
                assert status == 401, (bad, status, body)
                assert challenge == 'Bearer realm="voicebot-ops"'
                assert OPS_TOKEN not in body
            refusals = [line for line in lines if "ops listener: refused" in line]

            # The right token: the stats, the reset and health.
            right = f"Bearer {OPS_TOKEN}"
            status, _, body = await _get(http, server.ops_url + "/stats", right)
            assert status == 200 and '"loop_lag_ms"' in body
            status, _, _ = await _get(http, server.ops_url + "/stats/reset", right, method="POST")
            assert status == 200
            assert (await _get(http, server.ops_url + "/readyz", right))[0] == 200

            # Same state as the public app: a live call shows on the ops listener's /livez.
            call = asyncio.create_task(
                place_call(
                    server.url, CallPlan().wait_for_greeting().hangup(), auth_token=TWILIO_TOKEN
                ),
                name="ops-test-call",
            )
            assert await wait_until(lambda: len(server.calls) == 1, 10.0)
            async with http.get(
                server.ops_url + "/livez", headers={"Authorization": right}
            ) as resp:
                assert (await resp.json())["calls"] == 1
            result = await call
    finally:
        logger.remove(sink)

    assert result.ok, result.failure
    # Four refusals in a burst: one WARNING line (rate-limited), with the reason, and the token
    # appears in no log line at all.
    assert len(refusals) == 1, refusals
    assert refusals[0].startswith("WARNING ")
    assert "GET /stats" in refusals[0] and "no Authorization header" in refusals[0]
    assert not [line for line in lines if OPS_TOKEN in line]
    # Nothing above opened a Gemini session but the one real call.
    assert server.emulator.sessions_total == 1


async def test_a_loopback_ops_listener_without_token_serves_stats(make_server):
    server = await make_server()
    async with aiohttp.ClientSession() as http:
        status, _, body = await _get(http, server.ops_url + "/stats")
        assert status == 200 and '"calls": 0' in body
        assert (await _get(http, server.url + "/stats"))[0] == 404
    assert server.emulator.sessions_total == 0
