"""Dead air on synthetic timelines: the silences the caller sat through and did not cause.

Each test drives a :class:`CallerCore` tick by tick (20 ms) with bot audio arriving in real time
when the scripted bot "talks", and checks ``dead_air_secs`` and the ``dead_air`` waits.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import pytest

from sim.caller.core import CallerCore, CallResult
from sim.caller.dead_air import DeadAir
from sim.caller.line_noise import LineNoise
from sim.caller.plan import FRAME_BYTES, CallPlan, Utterance

pytestmark = pytest.mark.unit

T0 = 100.0
LOUD = bytes([0x00, 0x80]) * (FRAME_BYTES // 2)
MEDIA = json.dumps(
    {"event": "media", "streamSid": "MZ1", "media": {"payload": base64.b64encode(LOUD).decode()}}
)
CLEAR = json.dumps({"event": "clear", "streamSid": "MZ1"})


def make(plan: CallPlan, playout_delay_secs: float = 0.0) -> CallerCore:
    plan.line_noise = LineNoise(dbfs=None)
    plan.playout_delay_secs = playout_delay_secs
    core = CallerCore(plan, t0=T0, call_sid="CA1", account_sid="AC1", stream_sid="MZ1")
    core.open(T0)
    return core


def run(
    core: CallerCore,
    secs: float,
    bot: Callable[[float], bool],
    server: Callable[[float, CallerCore], None] | None = None,
) -> CallResult:
    """Tick for ``secs``; ``bot(t)`` (t from the stream start): a 20 ms bot frame arrives now."""
    for i in range(1, round(secs / 0.02) + 1):
        t = i * 0.02
        now = T0 + t
        if server is not None:
            server(t, core)
        if core.done:
            break
        if bot(t):
            core.on_message(MEDIA, now)
        core.on_tick(now)
    return core.result(T0 + secs)


def speech(secs: float) -> Utterance:
    return Utterance.from_ulaw(LOUD * round(secs / 0.02), "u")


def within(*spans: tuple[float, float]) -> Callable[[float], bool]:
    return lambda t: any(a <= t < b - 1e-9 for a, b in spans)


def test_a_stall_mid_reply_is_measured_whole() -> None:
    # greeting 1 s, then 3 s of nothing (a stall), then 1 s more; the caller keeps waiting
    core = make(CallPlan().wait_for_greeting(timeout_secs=30, quiet_secs=5).hangup())
    res = run(core, 12.0, within((0.5, 1.5), (4.5, 5.5)))
    assert res.dead_air_secs == pytest.approx(3.0, abs=0.03)
    kinds = [(w.kind, w.until) for w in res.dead_air]
    assert kinds == [("greeting", "audio"), ("mid-reply", "audio")]
    assert res.dead_air[0].secs == pytest.approx(0.5, abs=0.03)
    assert res.dead_air[1].t == pytest.approx(1.5, abs=0.03)
    # the underrun metric only sees gaps shorter than a "new reply"; dead air sees the stall
    assert res.gap_max_ms < 100
    assert any(e.kind == "dead-air" and "mid-reply" in e.detail for e in res.events)


def test_a_late_greeting_counts_from_the_stream_start_to_when_it_is_heard() -> None:
    core = make(CallPlan().wait_for_greeting(timeout_secs=30).hangup(), playout_delay_secs=0.06)
    res = run(core, 8.0, within((4.0, 5.0)))
    assert res.dead_air_secs == pytest.approx(4.0 + 0.06, abs=0.03)
    assert res.dead_air[0].kind == "greeting" and res.dead_air[0].t == pytest.approx(0.0)
    assert res.greeting_ms == pytest.approx(res.dead_air_secs * 1000, abs=1)


def test_a_caller_who_pauses_by_choice_causes_that_silence() -> None:
    # greeting [0.2, 1.2); the caller waits 0.5 s of quiet, then pauses 4 s by choice; the bot
    # says something again during the pause: that silence was the caller's, not dead air
    plan = CallPlan().wait_for_greeting(quiet_secs=0.5).pause(4.0).hangup()
    core = make(plan)
    res = run(core, 8.0, within((0.2, 1.2), (3.5, 4.0)))
    assert res.greeting_ms == pytest.approx(200, abs=1)  # under DEAD_AIR_MIN_SECS: not listed
    assert res.dead_air == [] and res.dead_air_secs == 0.0


def test_a_stall_during_a_pause_begun_mid_reply_is_still_the_bots() -> None:
    # the caller pauses while the bot is talking: a stall in that reply is dead air
    core = make(CallPlan().pause(8.0).hangup())
    res = run(core, 9.0, within((0.1, 2.0), (4.0, 5.0)))
    assert res.dead_air_secs == pytest.approx(2.0, abs=0.03)
    assert res.dead_air[-1].kind == "mid-reply"


def test_a_barge_in_reply_wait_counts_from_the_end_of_the_callers_words() -> None:
    # bot talks from 0.2 s; the caller barges in after 1 s of it for 1 s; clear 0.3 s into the
    # barge-in; the bot's answer arrives 0.8 s after the caller stopped
    plan = CallPlan().barge_in(after_bot_audio_secs=1.0, audio=speech(1.0)).pause(5).hangup()
    core = make(plan)
    state: dict[str, float] = {}

    def server(t: float, c: CallerCore) -> None:
        if c.res.bargeins and "b" not in state:
            state["b"] = t
        if "b" in state and "clear" not in state and t >= state["b"] + 0.3:
            state["clear"] = t
            c.on_message(CLEAR, T0 + t)

    def bot(t: float) -> bool:
        if "clear" not in state:
            return t >= 0.2
        return t >= state["b"] + 1.0 + 0.8 and t < state["b"] + 3.0

    res = run(core, 6.0, bot, server)
    assert res.bargeins == 1 and res.clears == 1
    reply = [w for w in res.dead_air if w.kind == "reply"]
    assert len(reply) == 1 and reply[0].secs == pytest.approx(0.8, abs=0.05)
    assert all(w.kind != "mid-reply" for w in res.dead_air)  # the clear is not a stall
    assert res.dead_air_secs == pytest.approx(0.8, abs=0.05)


def test_no_reply_before_the_server_hangs_up_counts_to_the_end() -> None:
    plan = CallPlan().wait_for_greeting().say(speech(0.5)).wait_for_reply(timeout_secs=30)
    core = make(plan.hangup())

    def server(t: float, c: CallerCore) -> None:
        if t >= 6.0 and not c.closed:
            c.on_closed(T0 + t, 1000, "")

    res = run(core, 8.0, within((0.2, 1.0)), server)
    assert res.dead_air[-1].kind == "reply" and res.dead_air[-1].until == "end"
    # greeting ends at 1.0, quiet 0.5 s -> speaks 1.5..2.0 -> waits until the close at 6.0
    assert res.dead_air_secs == pytest.approx(4.0, abs=0.05)


def test_an_unanswered_question_counts_until_the_caller_speaks_again() -> None:
    plan = CallPlan().say(speech(0.4)).pause(3.0).say(speech(0.4)).wait_for_reply().hangup()
    core = make(plan)
    res = run(core, 6.0, within((4.2, 5.0)))
    assert [(w.kind, w.until) for w in res.dead_air] == [("reply", "caller"), ("reply", "audio")]
    assert res.dead_air[0].secs == pytest.approx(3.0, abs=0.05)
    assert res.dead_air[1].secs == pytest.approx(4.2 - 3.8, abs=0.05)


def test_dead_air_roundtrips_through_dict() -> None:
    res = CallResult("CA1", dead_air_secs=2.5, dead_air=[DeadAir(1.0, 2.5, "mid-reply", "audio")])
    back = CallResult.from_dict(json.loads(json.dumps(res.to_dict())))
    assert back.dead_air == res.dead_air and back.dead_air_secs == 2.5
