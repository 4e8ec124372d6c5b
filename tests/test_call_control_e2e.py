"""Call control end to end: GoAway handover, limits, transfer and audio-stream-end."""

from __future__ import annotations

import json

import pytest

from sim.caller import CallPlan, place_call
from sim.emulator import EmulatorConfig, FaultPlan, ToolScript
from sim.emulator.config import SHORT_REPLY_WAV
from sim.testing import wait_until

pytestmark = pytest.mark.e2e

THINK_MS = 300
# The time scale of tests whose timers, not their audio, set the pace (Settings.time_scale and
# EmulatorConfig.time_scale): limits and silences last a tenth, audio plays in real time.
SCALE = 0.1
# Where a test does not depend on the length of the bot's audio, the emulator speaks the 2.06 s
# short reply rather than its 3.9 s greeting or 13.8 s answer: the call's pace is the audio's.
SHORT = SHORT_REPLY_WAV


def _client_messages(emulator) -> list[str]:
    """Every recorded client message of every session, as JSON text."""
    return [json.dumps(r["msg"]) for rs in emulator.recordings.values() for r in rs]


async def test_goaway_hands_over_to_a_new_connection_without_dropping_the_call(
    make_emulator, make_server
):
    # goAway comes during the 3.9 s greeting; the reply is the short one (2.06 s).
    emu = await make_emulator(
        EmulatorConfig(think_ms=THINK_MS, answer_wav=SHORT),
        FaultPlan(goaway_after=2.0, time_left=5.0),
    )
    server = await make_server(emulator=emu)
    plan = CallPlan().wait_for_greeting().say("caller_question.wav").wait_for_reply().hangup()
    result = await place_call(server.url, plan)

    assert result.ok, result.failure
    assert len(result.response_latencies_ms) == 1
    assert result.gap_max_ms < 100, result.gaps_ms  # the handover happened while quiet
    assert emu.sessions_total >= 2  # the handover opened a resumed session
    resumed = [m for m in _client_messages(emu) if '"handle": "' in m or '"handle":"' in m]
    assert resumed, "the second setup carries the resumption handle"
    # The emulator never had to drop a connection with 1011: we left before the deadline.
    assert not [c for c in emu.closes if c[1] == 1011]


async def test_idle_caller_is_reprompted_then_told_goodbye(make_emulator, make_server):
    emu = await make_emulator(EmulatorConfig(think_ms=THINK_MS, time_scale=SCALE))
    server = await make_server(emulator=emu, time_scale=SCALE)
    result = await place_call(server.url, CallPlan().pause(25), to="+15005550007")

    assert result.ok, result.failure
    assert "1000" in result.end_reason, result.end_reason
    assert result.duration_secs < 20
    # The re-prompt and the goodbye were both played in full (the emulator answers an
    # instruction with its 3.9 s greeting recording), and nothing was cut off.
    assert result.clears == 0
    assert result.audio_played_secs > 7.0
    texts = _client_messages(server.emulator)
    assert any("Are you still there?" in t for t in texts)
    assert any("Goodbye for now." in t for t in texts)


async def test_max_call_duration_warns_then_hangs_up(make_server):
    server = await make_server()
    result = await place_call(server.url, CallPlan().pause(30), to="+15005550008")

    assert result.ok, result.failure
    assert "1000" in result.end_reason, result.end_reason
    assert 7 <= result.duration_secs < 20
    # Greeting, warning and goodbye (3.9 s each from the emulator) were all played in full:
    # the goodbye is spoken after the warning finishes, and the hang-up waits for it.
    assert result.clears == 0
    assert result.audio_played_secs > 11.0
    texts = _client_messages(server.emulator)
    assert any("We are almost out of time." in t for t in texts)
    assert any("time limit" in t for t in texts)


async def test_transfer_redirects_the_call_to_dial(make_emulator, make_server, fake_twilio_rest):
    emu = await make_emulator(
        EmulatorConfig(
            think_ms=THINK_MS,
            greeting_wav=SHORT,
            tool_scripts=(ToolScript(after_turn=1, name="transfer_call"),),
        )
    )
    server = await make_server(
        emulator=emu,
        twilio_api_base=fake_twilio_rest.url,
        twilio_account_sid="AC" + "0" * 32,
        twilio_auth_token="secret",
    )
    # The redirect comes ~2 s after the question (the model's turn, a 1.5 s reply, the REST
    # call); the caller stays on the line 4.5 s, as Twilio would until the redirect.
    plan = CallPlan().wait_for_greeting().say("caller_question.wav").pause(4.5).hangup()
    result = await place_call(server.url, plan, to="+15005550009", auth_token="secret")

    assert result.ok, result.failure
    redirects = [r for r in fake_twilio_rest.requests if "Twiml" in r["form"]]
    assert len(redirects) == 1
    twiml = redirects[0]["form"]["Twiml"]
    assert "<Dial>+15551239999</Dial>" in twiml
    # The announcement in the persona's language and Twilio voice (texts.say_voice, issue 15).
    assert '<Say language="en-US" voice="Polly.Joanna-Neural">Transferring you now.</Say>' in twiml
    assert not [r for r in fake_twilio_rest.requests if r["form"].get("Status") == "completed"]
    assert redirects[0]["path"].endswith(f"/Calls/{result.call_sid}.json")


async def test_audio_stream_end_after_caller_silence_then_resumes(make_emulator, make_server):
    # A one-second silence (quiet.yaml), scaled; the greeting's and the reply's lengths play no
    # part here, so the emulator speaks its 2.06 s short reply for both.
    emu = await make_emulator(
        EmulatorConfig(think_ms=THINK_MS, greeting_wav=SHORT, answer_wav=SHORT, time_scale=SCALE)
    )
    server = await make_server(emulator=emu, time_scale=SCALE)
    plan = (
        CallPlan()
        .wait_for_greeting()
        .pause(2.0 * SCALE)
        .say("caller_question.wav")
        .wait_for_reply()
        .hangup()
    )
    result = await place_call(server.url, plan, to="+15005550010")

    assert result.ok, result.failure
    assert len(result.response_latencies_ms) == 1  # the caller was heard after the pause
    (records,) = server.emulator.recordings.values()
    texts = [json.dumps(r["msg"]) for r in records]
    ends = [i for i, t in enumerate(texts) if "audioStreamEnd" in t or "audio_stream_end" in t]
    assert ends, "audioStreamEnd was sent"
    # No caller audio went out while the stream was paused: the next audio message is the
    # pre-roll (0.5 s of 16 kHz PCM, 16000 bytes), sent when the caller spoke again.
    sizes = [
        int(t.split('"data": "<')[1].split(" bytes>")[0])
        for t in texts[ends[0] + 1 :]
        if '"data": "<' in t
    ]
    assert sizes and sizes[0] >= 8000, sizes[:5]
    assert await wait_until(lambda: len(server.calls) == 0, 2.0)
