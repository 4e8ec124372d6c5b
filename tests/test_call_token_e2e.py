"""Replay: one captured webhook's TwiML and signed upgrade start exactly one call.

The server runs as in production (``TWILIO_AUTH_TOKEN`` and ``PUBLIC_URL`` set, Twilio signing
the public ``https``/``wss`` URLs); the attacker holds everything Twilio sent once.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from loguru import logger

from sim.caller.hand_stream import SignedTwilio
from sim.caller.twilio_webhook import new_sid
from sim.testing import wait_until

pytestmark = pytest.mark.e2e

TOKEN = "test-auth-token"
PUBLIC = "https://bot.example.com"


@pytest.fixture
def warnings() -> list[str]:
    lines: list[str] = []
    sink = logger.add(lines.append, level="WARNING", format="{level} {message}")
    yield lines
    logger.remove(sink)


async def test_a_captured_twiml_and_upgrade_start_one_call_only(make_server, warnings):
    server = await make_server(twilio_auth_token=TOKEN, public_url=PUBLIC)
    async with aiohttp.ClientSession() as session:
        twilio = SignedTwilio(session, server.url, PUBLIC, TOKEN)
        sid = new_sid("CA")
        twiml = await twilio.webhook(sid)
        genuine = asyncio.create_task(
            twilio.run_stream(await twilio.upgrade(twiml), sid, twiml.parameters, talk_secs=2.0),
            name="genuine-call",
        )
        assert await wait_until(lambda: len(server.calls) == 1, 5.0)
        # While the call is up, and again after it ended: the same upgrade and start.
        during = await asyncio.gather(
            *[
                twilio.run_stream(await twilio.upgrade(twiml), sid, twiml.parameters, talk_secs=2)
                for _ in range(3)
            ]
        )
        first = await genuine
        assert await wait_until(lambda: len(server.calls) == 0, 5.0)
        after = await twilio.run_stream(
            await twilio.upgrade(twiml), sid, twiml.parameters, talk_secs=2
        )

    assert first.bot_media > 0  # the real call ran: its greeting was heard
    for replay in [*during, after]:
        assert replay.close_code == 1008
        assert replay.close_reason.startswith("call token replay")
        assert replay.bot_media == 0
    assert server.emulator.sessions_total == 1
    replays = [line for line in warnings if "replay" in line and sid in line]
    assert len(replays) == 4, warnings
    assert all(line.startswith("WARNING") for line in replays)


async def test_an_expired_call_token_is_refused(make_server, warnings):
    # No pre-warming: the late call's signed webhook would open its session (test_prewarm_e2e).
    server = await make_server(
        twilio_auth_token=TOKEN, public_url=PUBLIC, call_token_ttl_secs=0.3, prewarm=False
    )
    async with aiohttp.ClientSession() as session:
        twilio = SignedTwilio(session, server.url, PUBLIC, TOKEN)
        late_sid = new_sid("CA")
        late = await twilio.webhook(late_sid)
        await asyncio.sleep(0.5)
        expired = await twilio.run_stream(
            await twilio.upgrade(late), late_sid, late.parameters, talk_secs=2
        )
        assert server.emulator.sessions_total == 0
        # A stream that starts in time (Twilio's take well under a second) is served.
        sid = new_sid("CA")
        twiml = await twilio.webhook(sid)
        served = await twilio.run_stream(
            await twilio.upgrade(twiml), sid, twiml.parameters, talk_secs=5, until_heard=True
        )

    assert (expired.close_code, expired.close_reason) == (1008, "call token expired")
    assert expired.bot_media == 0
    assert [line.strip() for line in warnings if late_sid in line] == [
        f"WARNING call {late_sid} refused at stream start: call token expired"
    ]
    assert served.bot_media > 0
    assert server.emulator.sessions_total == 1


async def test_a_token_for_another_call_or_a_forged_one_is_refused(make_server, warnings):
    server = await make_server(twilio_auth_token=TOKEN, public_url=PUBLIC)
    async with aiohttp.ClientSession() as session:
        twilio = SignedTwilio(session, server.url, PUBLIC, TOKEN)
        sid, other_sid = new_sid("CA"), new_sid("CA")
        twiml = await twilio.webhook(sid)
        await twilio.webhook(other_sid)  # a call the attacker wants to ride on
        swapped = await twilio.run_stream(
            await twilio.upgrade(twiml), other_sid, twiml.parameters, talk_secs=2
        )
        token = twiml.parameters["call_token"]
        flipped = "B" if token[-5] == "A" else "A"  # one character of the signature
        forged_params = dict(twiml.parameters, call_token=token[:-5] + flipped + token[-4:])
        forged = await twilio.run_stream(
            await twilio.upgrade(twiml), sid, forged_params, talk_secs=2
        )

    assert (swapped.close_code, swapped.close_reason) == (
        1008,
        "call_token was issued for another call",
    )
    assert (forged.close_code, forged.close_reason) == (1008, "invalid call_token")
    assert server.emulator.sessions_total == 0
    assert any(f"call {other_sid} refused at stream start" in line for line in warnings)
