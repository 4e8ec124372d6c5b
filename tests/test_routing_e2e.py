"""Routing at the webhook: the number called picks the persona, pinned in the TwiML."""

from __future__ import annotations

import aiohttp
import pytest

from sim.caller import parse_twiml, webhook_params

pytestmark = pytest.mark.e2e


async def _persona_for(session, url: str, to: str) -> tuple[int, str | None]:
    params = webhook_params("CA" + to[-4:] + "0" * 28, "AC" + "1" * 32, "+15005550001", to)
    async with session.post(url, data=params) as resp:
        body = await resp.text()
        if resp.status != 200:
            return resp.status, None
        return resp.status, parse_twiml(body).parameters.get("persona")


async def test_persona_by_number_called_with_default_and_override(make_server):
    server = await make_server()
    voice = server.url + "/twilio/voice"
    async with aiohttp.ClientSession() as session:
        assert await _persona_for(session, voice, "+15005550008") == (200, "limited")
        assert await _persona_for(session, voice, "+15005550009") == (200, "transfer")
        assert await _persona_for(session, voice, "+19999999999") == (200, "frontdesk")
        assert await _persona_for(session, voice + "?persona=quiet", "+15005550008") == (
            200,
            "quiet",
        )
        assert (await _persona_for(session, voice + "?persona=nobody", "+15005550008"))[0] == 404
    assert server.emulator.sessions_total == 0  # TwiML alone opens no Gemini session


async def test_full_server_answers_busy_twiml(make_server):
    server = await make_server(max_calls=1)
    voice = server.url + "/twilio/voice"
    async with aiohttp.ClientSession() as session:
        params = webhook_params("CA" + "1" * 32, "AC" + "1" * 32, "+15005550001", "+15005550006")
        async with session.post(voice, data=params) as resp:
            assert "<Stream" in await resp.text()
        params = webhook_params("CA" + "2" * 32, "AC" + "1" * 32, "+15005550001", "+15005550006")
        async with session.post(voice, data=params) as resp:
            body = await resp.text()
    assert "<Stream" not in body
    assert "lines are busy" in body and "<Hangup" in body
