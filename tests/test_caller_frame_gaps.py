"""What the caller's bot-frame gap (``interarrival_*``) counts: consecutive frames of one run.

Issue 17's bench found the speaking scenario's frame-gap p99 at ~120 ms with no underruns. These
tests pin down the metric: gaps across a ``clear`` or a caller's utterance are not frame gaps;
gaps inside a run are, even when the phone still had audio queued (the server sent ahead), and
only ``gaps_ms`` says whether the caller heard a hole.
"""

from __future__ import annotations

import base64
import json

import pytest

from sim.caller.core import CallerCore
from sim.caller.line_noise import LineNoise
from sim.caller.plan import FRAME_BYTES, CallPlan, Utterance

pytestmark = pytest.mark.unit

LOUD = bytes([0x00, 0x80]) * FRAME_BYTES  # 40 ms of full-scale µ-law, as the server sends
MEDIA = json.dumps(
    {"event": "media", "streamSid": "MZ1", "media": {"payload": base64.b64encode(LOUD).decode()}}
)
CLEAR = json.dumps({"event": "clear", "streamSid": "MZ1"})


def make(plan: CallPlan) -> CallerCore:
    plan.line_noise = LineNoise(dbfs=None)
    plan.playout_delay_secs = 0.06
    core = CallerCore(plan, t0=0.0, call_sid="CA1", account_sid="AC1", stream_sid="MZ1")
    core.open(0.0)
    return core


def test_gaps_across_a_clear_or_the_callers_words_are_not_frame_gaps() -> None:
    words = Utterance.from_ulaw(LOUD * 10, "u")  # 0.4 s
    core = make(CallPlan().pause(1.0).say(words).pause(5))
    t = 0.0
    for _ in range(10):  # a run paced at real time
        t += 0.04
        core.on_message(MEDIA, t)
    core.on_message(CLEAR, t + 0.01)
    core.on_message(MEDIA, t + 0.5)  # after the clear: a new run, 0.5 s later
    for i in range(1, 76):  # the caller speaks from 1.0 to 1.4 s
        core.on_tick(i * 0.02)
    assert [e.kind for e in core.res.events][-2:] == ["say", "said"]
    core.on_message(MEDIA, 2.0)  # the reply, 1.1 s after the last frame (under reply_break)
    core.on_message(MEDIA, 2.04)
    res = core.result(2.5)
    assert res.interarrival_max_ms == pytest.approx(40.0)
    assert res.interarrival_p99_ms == pytest.approx(40.0)


def test_a_wait_inside_a_run_counts_even_when_the_phone_had_audio_queued() -> None:
    # the server's reply start as measured on the speaking scenario: 11 frames at once (sent
    # ahead of playout), one 40 ms later, then 277 ms of waiting for the model's next burst
    core = make(CallPlan().pause(5))
    for _ in range(11):
        core.on_message(MEDIA, 1.0)
    core.on_message(MEDIA, 1.04)
    core.on_message(MEDIA, 1.317)
    res = core.result(2.0)
    assert res.interarrival_max_ms == pytest.approx(277.0)
    assert res.gaps_ms == []  # 0.48 s were queued from 1.06 s: the caller heard no hole
