"""Drain end to end: SIGTERM with 20 live calls and a 60 s drain window, at a time scale.

The real server (Twilio credentials set, REST at a fake), the real SDK against the emulator,
20 simulated callers: 6 hang up on their own within the window, 7 sit quietly on the line and
7 are hearing a 3.9 s answer when the window closes (the emulator greets with its 2.06 s short
reply, answers with its 3.9 s greeting recording and says the goodbye with the short reply).
The drain is started the way SIGTERM starts it (``CallRegistry.drain``, ``bot.server``).
Expected: a new caller gets the busy TwiML; the 6 end naturally, untouched; the other 14 hear
their answer to its end, then the goodbye, and are hung up through the REST API with a normal
stream close; none is cut.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from bot.twilio_routes import BUSY
from pipelines.call.control import WRAP_UP_GOODBYE
from sim.caller import CallPlan, place_call
from sim.emulator import EmulatorConfig
from sim.emulator.config import ASSETS_DIR, SHORT_REPLY_WAV
from sim.testing import wait_until

pytestmark = pytest.mark.e2e

TOKEN = "secret"
SID = "AC" + "0" * 32
# The figure: 60 s of drain, shortened to 0.16 of it (9.6 s): the natural calls are
# over by ~4.5 s, and the window closes ~1.5 s into the answering calls' 3.9 s answer (which
# starts ~8 s after the calls are placed); the goodbyes after it are real time. The window is
# shortened, not the server's clock: a time scale would also shrink the model watchdog to
# ~0.5/1.3/2.4 s, which a loaded test machine's stalls set off (a call then ends with the
# apology instead of the drain's goodbye).
DRAIN_SECS = 60.0
SCALE = 0.16
NATURAL, IDLE, ANSWERING = 6, 7, 7
ANSWER_SECS = 3.87  # the emulator's answer here (bot_greeting.wav)
GREETING_SECS = 2.06  # its greeting and its goodbye (bot_short_reply.wav)


def _number(i: int) -> str:
    return f"+1500555{i:04d}"


def _session_texts(emulator) -> dict[str, str]:
    """Every session's client messages as one text, keyed by the caller's number in its setup."""
    out: dict[str, str] = {}
    for records in emulator.recordings.values():
        text = "\n".join(json.dumps(r["msg"]) for r in records)
        for i in range(NATURAL + IDLE + ANSWERING):
            if _number(i) in text:
                out[_number(i)] = out.get(_number(i), "") + text
    return out


async def _health(url: str) -> tuple[int, int]:
    """(``/livez``, ``/readyz``) status codes."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/livez") as live, http.get(f"{url}/readyz") as ready:
            return live.status, ready.status


async def test_drain_lets_calls_end_then_wraps_up_the_rest_with_a_goodbye(
    make_emulator, make_server, fake_twilio_rest
):
    emu = await make_emulator(
        EmulatorConfig(
            think_ms=300,
            greeting_wav=SHORT_REPLY_WAV,
            answer_wav=ASSETS_DIR / "bot_greeting.wav",
        )
    )
    server = await make_server(
        emulator=emu,
        twilio_api_base=fake_twilio_rest.url,
        twilio_account_sid=SID,
        twilio_auth_token=TOKEN,
    )
    plans = (
        [CallPlan().wait_for_greeting().pause(1).hangup() for _ in range(NATURAL)]
        + [CallPlan().wait_for_greeting().pause(60) for _ in range(IDLE)]
        + [
            CallPlan().wait_for_greeting().say("caller_question.wav").wait_for_reply().pause(60)
            for _ in range(ANSWERING)
        ]
    )
    total = len(plans)
    tasks = [
        asyncio.create_task(
            place_call(server.url, plan, auth_token=TOKEN, from_=_number(i)), name=f"call-{i}"
        )
        for i, plan in enumerate(plans)
    ]
    assert await wait_until(lambda: len(server.calls) == total, 15.0)
    assert await _health(server.url) == (200, 200)

    began = time.monotonic()
    drain = asyncio.create_task(server.calls.drain(DRAIN_SECS * SCALE), name="drain")
    await asyncio.sleep(0.2)
    # Draining: still live (not to be restarted), no longer ready (no new callers).
    assert await _health(server.url) == (200, 503)
    late = await place_call(server.url, CallPlan().wait_for_greeting(), auth_token=TOKEN)
    results = await asyncio.wait_for(asyncio.gather(*tasks), 90)
    await asyncio.wait_for(drain, 60)
    drained_in = time.monotonic() - began

    # A caller arriving during the drain hears the busy TwiML; no stream is opened.
    assert late.stream_sid == "" and BUSY in late.end_reason, late.end_reason

    hang_ups = {
        r["path"].rsplit("/", 1)[-1].removesuffix(".json")
        for r in fake_twilio_rest.requests
        if r["form"].get("Status") == "completed"
    }
    texts = _session_texts(server.emulator)
    natural, wrapped = results[:NATURAL], results[NATURAL:]
    for i, result in enumerate(natural):
        assert result.ok, result.failure
        assert "caller hung up" in result.end_reason, result.end_reason
        assert result.call_sid not in hang_ups
        assert "The line has to close now" not in texts[_number(i)]
    for i, result in enumerate(wrapped, start=NATURAL):
        answering = i >= NATURAL + IDLE
        # Hung up by the bot: REST first, then a normal close; never 1011/1001 + apology.
        assert result.ok, (i, result.failure, result.end_reason)
        assert "(1000" in result.end_reason, (i, result.end_reason)
        assert result.call_sid in hang_ups, i
        assert result.clears == 0, i
        # The goodbye was asked for and played: greeting (+ the whole answer) + goodbye.
        assert WRAP_UP_GOODBYE.split(".")[0] in texts[_number(i)], i
        heard = GREETING_SECS + (ANSWER_SECS if answering else 0.0) + GREETING_SECS
        assert result.audio_played_secs > heard - 0.8, (i, result.audio_played_secs, heard)
        # Nothing was left unplayed when the line closed (not cut mid-answer or mid-goodbye).
        assert result.audio_received_secs - result.audio_played_secs < 0.3, i
        assert result.duration_secs > DRAIN_SECS * SCALE, i
    # Every call was over before the wrap-up bound; the drain counted no cut call.
    assert len(server.calls) == 0
    totals = server.calls.totals
    assert (totals["drain_natural"], totals["drain_wrapped_up"], totals["drain_cut"]) == (
        NATURAL,
        IDLE + ANSWERING,
        0,
    )
    assert drained_in < DRAIN_SECS * SCALE + 25, drained_in
    print(
        f"\ndrain of {total} calls, window {DRAIN_SECS * SCALE:g} s: {NATURAL} ended "
        f"naturally, {len(wrapped)} wrapped up with a goodbye, 0 cut; done in {drained_in:.1f} s"
    )
