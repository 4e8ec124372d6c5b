"""A whole call over loopback: simulated Twilio caller -> real server -> real SDK -> emulator."""

from __future__ import annotations

import asyncio

import pytest
from loguru import logger

from sim.caller import CallPlan, place_call
from sim.emulator import EmulatorConfig, FaultPlan, ToolScript
from sim.emulator.config import SHORT_REPLY_WAV
from sim.testing import wait_until

pytestmark = pytest.mark.e2e

THINK_MS = 300
# Where a test does not depend on the length of the bot's audio, the emulator speaks the 2.06 s
# short reply rather than its 3.9 s greeting or 13.8 s answer: the call's pace is the audio's.
SHORT = SHORT_REPLY_WAV


def _server_tasks() -> set[asyncio.Task]:
    # The persona store's file watcher re-creates a short ``wait_for(Event.wait())`` task every
    # second on Python 3.11; it belongs to the process, not to a call.
    return {
        t
        for t in asyncio.all_tasks()
        if t is not asyncio.current_task() and t.get_coro().__qualname__ != "Event.wait"
    }


async def test_greeting_then_reply(make_emulator, make_server):
    # Greeting and reply: the 2.06 s short reply each (together over 4 s of audio).
    emu = await make_emulator(
        EmulatorConfig(think_ms=THINK_MS, greeting_wav=SHORT, answer_wav=SHORT)
    )
    server = await make_server(emulator=emu)
    plan = CallPlan().wait_for_greeting().say("caller_question.wav").wait_for_reply().hangup()
    result = await place_call(server.url, plan)

    assert result.ok, result.failure
    assert result.greeting_ms is not None and result.greeting_ms < 3000
    assert len(result.response_latencies_ms) == 1
    # The emulator thinks for 300 ms after the caller's turn ends (its VAD needs ~0.5 s of
    # silence to call the turn over), so the reply cannot come sooner than that.
    assert THINK_MS <= result.response_latencies_ms[0] < THINK_MS + 1500
    assert result.stale_frames == 0
    assert result.audio_played_secs > 3.0
    assert result.gap_max_ms < 100, result.gaps_ms


async def test_barge_in_clears_and_sends_no_stale_audio(make_emulator, make_server):
    # A short greeting; the answer talked over is the long one (13.8 s).
    emu = await make_emulator(EmulatorConfig(think_ms=THINK_MS, greeting_wav=SHORT))
    server = await make_server(emulator=emu)
    plan = (
        CallPlan()
        .wait_for_greeting()
        .say("caller_question.wav")
        .barge_in(after_bot_audio_secs=1.5)
        .pause(1.0)
        .hangup()
    )
    result = await place_call(server.url, plan)

    assert result.ok, result.failure
    assert result.bargeins == 1
    assert result.clears == 1
    assert len(result.bargein_to_clear_ms) == 1
    assert result.bargein_to_clear_ms[0] < 1000
    assert result.stale_frames == 0
    # The long answer (~14 s) was cut: far less of it was played than it lasts.
    assert result.audio_cleared_secs < 0.5
    assert result.audio_played_secs < 10


async def test_caller_hang_up_frees_everything(make_emulator, make_server):
    emu = await make_emulator(EmulatorConfig(think_ms=THINK_MS, greeting_wav=SHORT))
    server = await make_server(emulator=emu)
    await asyncio.sleep(0.3)  # let the server's own background tasks settle
    before = _server_tasks()
    result = await place_call(server.url, CallPlan().wait_for_greeting().hangup())
    assert result.ok, result.failure

    # Within 1 s of the hang-up: the call is gone, the Gemini session closed, no task left.
    assert await wait_until(lambda: len(server.calls) == 0, 1.0)
    assert await wait_until(lambda: server.emulator.active_sessions == 0, 1.0)
    assert await wait_until(lambda: not (_server_tasks() - before), 1.0), [
        (t.get_name(), t.get_coro()) for t in _server_tasks() - before
    ]


async def test_bot_ends_call_after_goodbye_is_played(make_emulator, make_server, fake_twilio_rest):
    emu = await make_emulator(
        EmulatorConfig(
            think_ms=THINK_MS,
            greeting_wav=SHORT,
            tool_scripts=(ToolScript(after_turn=1, name="end_call"),),
        )
    )
    server = await make_server(
        emulator=emu,
        twilio_api_base=fake_twilio_rest.url,
        twilio_account_sid="AC" + "0" * 32,
        twilio_auth_token="secret",
    )
    plan = CallPlan().wait_for_greeting().say("caller_question.wav").pause(15)
    result = await place_call(server.url, plan, auth_token="secret")

    assert result.ok, result.failure
    # The goodbye reply (1.5 s) was played to the end before the stream closed normally.
    assert "server" in result.end_reason and "1000" in result.end_reason, result.end_reason
    assert result.audio_played_secs >= result.audio_received_secs - 0.05
    assert result.duration_secs < 12
    hangups = [r for r in fake_twilio_rest.requests if r["form"].get("Status") == "completed"]
    assert len(hangups) == 1
    assert hangups[0]["path"].endswith(f"/Calls/{result.call_sid}.json")


async def test_rejected_setup_gives_apology_and_names_the_persona(make_emulator, make_server):
    lines: list[str] = []
    sink = logger.add(lines.append, level="ERROR", format="{message}")
    try:
        emu = await make_emulator(EmulatorConfig(think_ms=THINK_MS), FaultPlan(max_sessions=0))
        server = await make_server(emulator=emu)
        result = await place_call(server.url, CallPlan().wait_for_greeting(timeout_secs=3))
        assert await wait_until(lambda: len(server.calls) == 0, 2.0)
    finally:
        logger.remove(sink)

    assert not result.ok
    assert "1011" in (result.failure or "") + result.end_reason
    assert result.twiml_say  # Twilio would now play the apology
    assert any("frontdesk.yaml" in line and "1011" in line for line in lines), lines
    assert len(server.calls) == 0
