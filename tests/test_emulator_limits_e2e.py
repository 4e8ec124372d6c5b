"""The server against the emulator's default limits and tool behaviour, end to end."""

from __future__ import annotations

import json

import pytest

from sim.caller import CallPlan, place_call
from sim.emulator import EmulatorConfig, ToolScript
from sim.emulator.config import ASSETS_DIR, SHORT_REPLY_WAV

pytestmark = pytest.mark.e2e


async def test_call_survives_connection_limit_handovers_with_its_audio(make_emulator, make_server):
    # The service's connection cap, scaled: a 12 s connection with goAway 10 s before its end
    # (a reply here lasts 4 s; the real cap is 10 min with goAway ~60 s before).
    emu = await make_emulator(
        EmulatorConfig(
            think_ms=300,
            answer_wav=ASSETS_DIR / "bot_greeting.wav",
            connection_secs=120,
            goaway_lead_secs=100,
            time_scale=0.1,
        )
    )
    server = await make_server(emulator=emu)
    plan = CallPlan().wait_for_greeting().say("caller_question.wav").wait_for_reply().hangup()
    result = await place_call(server.url, plan)

    assert result.ok, result.failure
    assert len(result.response_latencies_ms) == 1
    assert result.gap_max_ms < 100, result.gaps_ms  # each handover happened while quiet
    assert result.audio_played_secs > 7.0  # the greeting and the reply, whole
    assert emu.sessions_total >= 2, emu.closes  # handed over at least once
    # No connection reached its deadline, and no resume was refused as still open.
    assert not [c for c in emu.closes if c[1] == 1011], emu.closes


async def test_announced_end_call_plays_the_announcement_then_hangs_up(
    make_emulator, make_server, fake_twilio_rest
):
    # The persona's instructions say to speak before end_call: the model says goodbye, then
    # calls the tool; that goodbye counts, and the call ends once it has been played.
    # The short greeting: the announcement is the greeting voice's first second either way.
    emu = await make_emulator(
        EmulatorConfig(
            think_ms=300,
            greeting_wav=SHORT_REPLY_WAV,
            tool_scripts=(ToolScript(after_turn=1, name="end_call"),),
        )
    )
    server = await make_server(
        emulator=emu,
        twilio_api_base=fake_twilio_rest.url,
        twilio_account_sid="AC" + "0" * 32,
        twilio_auth_token="secret",
    )
    plan = CallPlan().wait_for_greeting().say("caller_goodbye.wav").pause(15)
    result = await place_call(server.url, plan, auth_token="secret", to="+15005550041")

    assert result.ok, result.failure
    assert "server" in result.end_reason and "1000" in result.end_reason, result.end_reason
    assert result.clears == 0  # nothing was cut off
    assert result.audio_played_secs >= result.audio_received_secs - 0.05
    hangups = [r for r in fake_twilio_rest.requests if r["form"].get("Status") == "completed"]
    assert len(hangups) == 1
    recorded = [r["msg"] for rs in emu.recordings.values() for r in rs]
    assert any("tool_response" in m or "toolResponse" in m for m in recorded)


async def test_call_without_compression_meets_the_session_limit_gracefully(
    make_emulator, make_server
):
    # 15 min -> 9 s (goAway 0.6 s before); frontdesk.yaml has no context_window_compression.
    # Short greeting and answer (2.06 s): the question still comes after the first limit.
    short = SHORT_REPLY_WAV
    emu = await make_emulator(
        EmulatorConfig(
            think_ms=300,
            greeting_wav=short,
            answer_wav=short,
            connection_secs=None,
            time_scale=0.01,
        )
    )
    server = await make_server(emulator=emu)
    plan = CallPlan().wait_for_greeting().pause(8).say("caller_question.wav").wait_for_reply()
    result = await place_call(server.url, plan.hangup())

    # One or two session limits in the ~17 s call (9 s each): each costs one resume the service
    # ends at once, then a fresh session (at most 1 + 2 * 2 connections), never a storm.
    assert emu.sessions_total <= 5, f"{emu.sessions_total} connections: a reconnect storm"
    assert result.ok, result.failure
    # The call went on past the limit on a fresh session seeded with the call's context, and
    # the caller's question after it was answered.
    assert len(result.response_latencies_ms) == 1, result.events
    assert result.replies_missed == 0
    fresh = [s for s in emu.recordings.values() if s and "handle" not in json.dumps(s[0]["msg"])]
    assert len(fresh) >= 2, "the call should have started a fresh session after the limit"
