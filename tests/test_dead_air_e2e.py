"""Dead air against the real server: the emulator stalls a reply; the caller measures the stall.

Issue 12 found the caller reporting ~1 s of "gap" for a 5 s stall, because a silence longer than
``reply_break_secs`` counted as a new reply. ``dead_air_secs`` measures the wait whole.
"""

from __future__ import annotations

import audioop
import wave
from pathlib import Path

import pytest

from sim.caller import CallPlan, place_call
from sim.caller.cmd import format_timeline
from sim.caller.line_noise import LineNoise
from sim.emulator.config import SHORT_REPLY_WAV, EmulatorConfig, FaultPlan

pytestmark = pytest.mark.e2e

STALL_SECS = 2.5
# The greeting's first phrase (2.06 s) as greeting and answer: it stalls 1 s in and resumes.
SHORT = SHORT_REPLY_WAV


def silence_at(path: Path, at_secs: float, silence_rms: float) -> float:
    """Seconds of silence (20 ms frames at or under ``silence_rms``) in a recording from ``at``."""
    with wave.open(str(path)) as w:
        pcm = w.readframes(w.getnframes())
    i, n = round(at_secs * 8000) * 2, 0
    while i + 320 <= len(pcm) and audioop.rms(pcm[i : i + 320], 2) <= silence_rms:
        i, n = i + 320, n + 1
    return n * 0.02


async def test_stalls_mid_greeting_and_mid_answer_are_measured_whole(
    make_emulator, make_server, tmp_path: Path
) -> None:
    """Every reply stalls for 2.5 s after 1 s of its audio; the caller waits through each.

    The server has some of the reply queued ahead when the stall starts, so the caller hears a
    little less than 2.5 s of silence; the figure must match the silence in what it recorded.
    """
    emu = await make_emulator(
        EmulatorConfig(greeting_wav=SHORT, answer_wav=SHORT),
        FaultPlan(stall_after=1.0, stall_secs=STALL_SECS),
    )
    server = await make_server(emulator=emu)
    heard = tmp_path / "heard.wav"
    # a caller who keeps waiting through a stall (quiet_secs longer than it), on a quiet line
    plan = (
        CallPlan(line_noise=LineNoise(dbfs=None))
        .wait_for_greeting(30, quiet_secs=STALL_SECS + 1)
        .say("caller_question.wav")
        .wait_for_reply(30, quiet_secs=STALL_SECS + 1)
        .hangup()
    )
    res = await place_call(server.url, plan, record=heard)
    assert res.ok, res.failure
    stalls = [w for w in res.dead_air if w.kind == "mid-reply" and w.secs >= 1.0]
    assert len(stalls) == 2, format_timeline(res.to_dict())
    assert all(1.5 <= w.secs <= STALL_SECS + 0.1 for w in stalls), stalls
    assert res.dead_air_secs == max(w.secs for w in res.dead_air)
    # each figure is the silence the caller heard, to the frame (the recording starts with the
    # stream; the timeline with the webhook)
    setup = (res.setup_ms or 0.0) / 1000
    for w in stalls:
        assert w.secs == pytest.approx(silence_at(heard, w.t - setup, plan.silence_rms), abs=0.05)
    assert "dead-air" in {e.kind for e in res.events}
