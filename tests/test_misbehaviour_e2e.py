"""The server against a model that misbehaves like the real one, over a noisy line, end to end.

A missed barge-in is still stopped on the phone by local VAD; a phantom interruption cuts one
reply but not the call. (A model that freezes after ``interrupted`` or answers a turn with
nothing needs a reply watchdog: issue 12.)
"""

from __future__ import annotations

import pytest

from sim.caller import CallPlan, place_call
from sim.emulator import EmulatorConfig, FaultPlan
from sim.emulator.config import SHORT_REPLY_WAV

pytestmark = pytest.mark.e2e

SHORT = SHORT_REPLY_WAV  # 2.06 s: the greeting's first phrase


async def test_missed_barge_in_is_stopped_by_local_vad(make_emulator, make_server):
    # The model never notices the caller talking over it and streams its reply (the default
    # 13.8 s answer) to the end.
    emu = await make_emulator(
        EmulatorConfig(think_ms=300, greeting_wav=SHORT), FaultPlan(missed_bargein="1")
    )
    server = await make_server(emulator=emu)
    plan = (
        CallPlan()
        .wait_for_greeting()
        .say("caller_question.wav")
        .barge_in(after_bot_audio_secs=1.5)
        .pause(2.0)
        .hangup()
    )
    result = await place_call(server.url, plan)

    assert result.ok, result.failure
    assert result.bargeins == 1
    assert result.clears == 1
    assert result.bargein_to_clear_ms[0] < 1000
    # The rest of the reply the model kept sending never reached the phone.
    assert result.stale_frames == 0
    assert result.audio_played_secs < 10  # the ~14 s answer was cut
    recorded = [r["msg"] for rs in emu.recordings.values() for r in rs]
    assert recorded, "the emulator saw the call"


async def test_phantom_interruption_cuts_one_reply_not_the_call(make_emulator, make_server):
    # The model sends `interrupted` 1 s into its first answer (of 2.06 s) although nobody spoke.
    emu = await make_emulator(
        EmulatorConfig(think_ms=300, greeting_wav=SHORT, answer_wav=SHORT),
        FaultPlan(phantom_interrupt="turn:1"),
    )
    server = await make_server(emulator=emu)
    plan = (
        CallPlan()
        .wait_for_greeting()
        .say("caller_question.wav")
        .wait_for_reply(quiet_secs=1.0)
        .say("caller_hello.wav")
        .wait_for_reply(quiet_secs=0.5, timeout_secs=8.0)
        .hangup()
    )
    result = await place_call(server.url, plan)

    assert result.ok, result.failure
    assert len(result.response_latencies_ms) == 2, "\n".join(map(str, result.events))
    assert result.replies_missed == 0
    assert result.clears == 1  # the phantom interruption stopped the phone at once
    assert result.stale_frames == 0
