"""Sans-IO caller core: pacing, phone buffer, marks, clear, metrics on synthetic timelines."""

from __future__ import annotations

import base64
import json
import math

import pytest

from sim.caller.core import CallerCore, CallResult, PhoneBuffer, percentile
from sim.caller.line_noise import LineNoise
from sim.caller.plan import FRAME_BYTES, CallPlan, Utterance, read_wav_as_ulaw, ulaw_rms

pytestmark = pytest.mark.unit

LOUD = bytes([0x00, 0x80]) * (FRAME_BYTES // 2)  # full-scale µ-law
QUIET = bytes([0xFF]) * FRAME_BYTES


def media(ulaw: bytes) -> str:
    return json.dumps(
        {
            "event": "media",
            "streamSid": "MZ1",
            "media": {"payload": base64.b64encode(ulaw).decode()},
        }
    )


def utt(frames: int) -> Utterance:
    return Utterance.from_ulaw(LOUD * frames, "u")


def mark(name: str) -> str:
    return json.dumps({"event": "mark", "streamSid": "MZ1", "mark": {"name": name}})


def make(
    plan: CallPlan, t0: float = 100.0, record: bool = False, ideal_line: bool = True
) -> CallerCore:
    """A core on ``plan``; ``ideal_line``: digital silence and no playout delay (exact times)."""
    if ideal_line:
        plan.line_noise = LineNoise(dbfs=None)
        plan.playout_delay_secs = 0.0
    core = CallerCore(
        plan,
        t0=t0,
        call_sid="CA1",
        account_sid="AC1",
        stream_sid="MZ1",
        custom_parameters={"persona": "p"},
        record=record,
    )
    return core


def test_open_sends_connected_then_start_with_custom_parameters() -> None:
    core = make(CallPlan().hangup())
    connected, start = (json.loads(m) for m in core.open(100.25))
    assert connected == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    assert start["event"] == "start" and start["sequenceNumber"] == "1"
    assert start["start"]["customParameters"] == {"persona": "p"}
    assert start["start"]["mediaFormat"] == {
        "encoding": "audio/x-mulaw",
        "sampleRate": 8000,
        "channels": 1,
    }
    assert core.res.setup_ms == pytest.approx(250.0)


def test_media_frames_carry_string_counters_and_silence_when_not_speaking() -> None:
    core = make(CallPlan().say(Utterance.from_ulaw(LOUD * 2, "u")).pause(1.0))
    core.open(100.0)
    msgs = [json.loads(core.on_tick(100.0 + 0.02 * i)[-1]) for i in range(1, 5)]
    assert [m["sequenceNumber"] for m in msgs] == ["2", "3", "4", "5"]
    assert [m["media"]["chunk"] for m in msgs] == ["1", "2", "3", "4"]
    assert [m["media"]["timestamp"] for m in msgs] == ["20", "40", "60", "80"]
    payloads = [base64.b64decode(m["media"]["payload"]) for m in msgs]
    assert all(len(p) == FRAME_BYTES for p in payloads)
    assert payloads[:2] == [LOUD, LOUD] and payloads[2:] == [QUIET, QUIET]
    assert all(m["media"]["track"] == "inbound" for m in msgs)


def test_phone_buffer_plays_at_real_time_and_records_silence_between() -> None:
    buf = PhoneBuffer(t_start=0.0, record=True)
    buf.push(LOUD, 0.0, True)  # plays 0.00-0.02
    start, dry = buf.push(LOUD, 0.005, True)  # queued behind: plays 0.02-0.04
    assert start == pytest.approx(0.02) and dry == 0.0
    assert not buf.empty(0.039) and buf.empty(0.04)
    start, dry = buf.push(LOUD, 0.1, True)  # dry 60 ms
    assert dry == pytest.approx(0.06)
    assert buf.recording is not None
    assert len(buf.recording) == 800 + FRAME_BYTES  # 0.1 s of timeline then the frame
    assert bytes(buf.recording[320:800]) == bytes([0xFF]) * 480


def test_clear_empties_buffer_returns_marks_and_truncates_recording() -> None:
    buf = PhoneBuffer(t_start=0.0, record=True)
    for _ in range(10):
        buf.push(LOUD, 0.0, True)  # 200 ms queued
    assert buf.mark("m1", 0.0) is False
    assert buf.due_marks(0.1) == []
    assert buf.clear(0.05) == ["m1"]
    assert buf.empty(0.05)
    assert buf.recording is not None and len(buf.recording) == 400
    assert buf.cleared_secs == pytest.approx(0.15)


def test_mark_echo_waits_for_playback_or_is_immediate_when_empty() -> None:
    core = make(CallPlan().pause(5))
    core.open(0.0)
    for _ in range(5):
        core.on_message(media(LOUD), 0.0)  # 100 ms buffered
    assert core.on_message(mark("a"), 0.0) == []
    assert not any('"mark"' in m for m in core.on_tick(0.08))
    echoed = [json.loads(m) for m in core.on_tick(0.1) if '"mark"' in m]
    assert echoed and echoed[0]["mark"] == {"name": "a"}
    now_echo = core.on_message(mark("b"), 0.5)
    assert json.loads(now_echo[0])["mark"]["name"] == "b"


def run_ticks(
    core: CallerCore, t_from: float, t_to: float, inbound: dict[int, list[str]] | None = None
) -> float:
    """Tick every 20 ms; ``inbound`` maps tick index -> messages delivered just before the tick."""
    n = round((t_to - t_from) / 0.02)
    for i in range(n):
        now = t_from + i * 0.02
        for m in (inbound or {}).get(i, []):
            core.on_message(m, now)
        core.on_tick(now)
        if core.done:
            return now
    return t_from + n * 0.02


def test_response_latency_from_last_frame_sent_to_first_audible_reply() -> None:
    core = make(CallPlan().say(utt(10)).wait_for_reply(timeout_secs=2, quiet_secs=0.1), t0=0.0)
    core.open(0.0)
    run_ticks(core, 0.0, 0.2)  # ticks 0..9 send the 10 frames; last frame at t=0.18
    # silence first (does not count), then audible audio at t=0.5
    core.on_message(media(QUIET), 0.3)
    core.on_message(media(LOUD), 0.5)
    res = core.result(0.6)
    assert res.response_latencies_ms == [pytest.approx(320.0)]
    assert res.replies_missed == 0


def test_unanswered_utterance_counts_as_missed_reply() -> None:
    core = make(CallPlan().say(utt(2)).wait_for_reply(timeout_secs=0.1), t0=0.0)
    core.open(0.0)
    end = run_ticks(core, 0.0, 1.0)
    res = core.result(end)
    assert core.done and res.replies_missed == 1 and res.response_latencies_ms == []
    assert any(e.kind == "timeout" for e in res.events)


def test_bargein_latency_and_stale_frames_after_clear() -> None:
    plan = CallPlan().barge_in(after_bot_audio_secs=0.1, audio=utt(25), timeout_secs=2).pause(0.5)
    core = make(plan, t0=0.0)
    core.open(0.0)
    for _ in range(50):  # 1 s of bot audio delivered at once
        core.on_message(media(LOUD), 0.0)
    run_ticks(core, 0.0, 0.12)  # barge-in starts at the tick at t=0.10
    barge_start = 0.10
    core.on_message(json.dumps({"event": "clear", "streamSid": "MZ1"}), 0.3)
    core.on_message(media(LOUD), 0.32)  # stale: caller still talking
    core.on_message(media(LOUD + LOUD), 0.34)  # 40 ms chunk = 2 stale frames
    core.on_message(media(QUIET), 0.36)  # silent: not stale
    run_ticks(core, 0.12, 0.7)
    core.on_message(media(LOUD), 0.8)  # after the utterance ended: a reply, not stale
    res = core.result(0.9)
    assert res.bargeins == 1 and res.clears == 1
    assert res.bargein_to_clear_ms == [pytest.approx((0.3 - barge_start) * 1000)]
    assert res.bargein_to_silence_ms == [pytest.approx((0.3 - barge_start) * 1000)]
    assert res.stale_frames == 3
    assert res.audio_cleared_secs == pytest.approx(0.7, abs=0.001)
    assert len(res.response_latencies_ms) == 1


def test_bargein_without_clear_is_unanswered_when_bot_keeps_talking() -> None:
    plan = CallPlan().barge_in(after_bot_audio_secs=0.0, audio=utt(5), timeout_secs=0.3).pause(1)
    core = make(plan, t0=0.0)
    core.open(0.0)
    inbound = {i: [media(LOUD)] for i in range(0, 60)}  # bot talks for 1.2 s, real time
    run_ticks(core, 0.0, 1.0, inbound)
    res = core.result(1.0)
    assert res.bargeins == 1 and res.bargeins_unanswered == 1 and res.bargein_to_clear_ms == []


def test_gaps_count_underruns_within_a_reply_only() -> None:
    core = make(CallPlan().pause(10), t0=0.0)
    core.open(0.0)
    t = 0.0
    for _ in range(5):  # steady real-time frames: no gaps
        core.on_message(media(LOUD), t)
        t += 0.02
    core.on_message(media(LOUD), t + 0.15)  # buffer dry for 150 ms, same reply
    core.on_message(media(LOUD), t + 5.0)  # 5 s later: a new reply, not a gap
    res = core.result(6.0)
    assert res.gaps_ms == [pytest.approx(150.0)]
    assert res.gap_max_ms == pytest.approx(150.0)
    assert res.interarrival_max_ms == pytest.approx(170.0)


def test_greeting_time_and_hangup_sends_stop() -> None:
    core = make(CallPlan().wait_for_greeting(timeout_secs=5, quiet_secs=0.1).hangup(), t0=0.0)
    core.open(0.5)
    core.on_message(media(QUIET), 0.6)
    core.on_message(media(LOUD), 0.9)
    out: list[str] = []
    for i in range(100):
        out += core.on_tick(0.9 + 0.02 * i)
        if core.done:
            break
    res = core.result(2.0)
    assert res.greeting_ms == pytest.approx(400.0)
    assert res.setup_to_audio_ms == pytest.approx(900.0)
    stop = json.loads(out[-1])
    assert stop["event"] == "stop" and stop["stop"] == {"accountSid": "AC1", "callSid": "CA1"}
    assert res.end_reason == "caller hung up"


def _hangup_at(out_by_t: dict[float, list[str]]) -> float | None:
    return next((t for t, out in sorted(out_by_t.items()) if any('"stop"' in m for m in out)), None)


def test_listen_hangs_up_once_that_much_bot_audio_played_however_late_it_came() -> None:
    for greeting_at in (0.4, 2.5):  # a quick greeting, and one from a loaded machine
        core = make(CallPlan().listen(0.5, timeout_secs=5).hangup(), t0=0.0)
        core.open(0.0)
        sent: dict[float, list[str]] = {}
        for i in range(1, 250):
            t = round(0.02 * i, 2)
            if greeting_at <= t:
                core.on_message(media(LOUD), t)  # real-time greeting audio
            sent[t] = core.on_tick(t)
            if core.done:
                break
        assert _hangup_at(sent) == pytest.approx(greeting_at + 0.5, abs=0.021), greeting_at
        res = core.result(5.0)
        assert res.end_reason == "caller hung up" and res.audio_received_secs >= 0.5
        assert res.greeting_ms is not None


def test_listen_timeout_bounds_only_the_wait_for_audio_to_start() -> None:
    core = make(CallPlan().listen(0.5, timeout_secs=1.0).hangup(), t0=0.0)
    core.open(0.0)
    sent: dict[float, list[str]] = {}
    for i in range(1, 150):
        t = round(0.02 * i, 2)
        if t >= 0.9:  # the greeting starts just inside the timeout
            core.on_message(media(LOUD), t)
        sent[t] = core.on_tick(t)
        if core.done:
            break
    assert _hangup_at(sent) == pytest.approx(1.4, abs=0.021)
    assert not [e for e in core.result(2.0).events if e.kind == "timeout"]


def test_listen_gives_up_after_its_timeout_and_notes_it() -> None:
    core = make(CallPlan().listen(0.5, timeout_secs=1.0).hangup(), t0=0.0)
    core.open(0.0)
    sent = {round(0.02 * i, 2): core.on_tick(round(0.02 * i, 2)) for i in range(1, 100)}
    assert _hangup_at(sent) == pytest.approx(1.0, abs=0.021)
    res = core.result(2.0)
    assert [e.detail for e in res.events if e.kind == "timeout"] == ["waited 1 s for bot audio"]
    assert res.dead_air_secs >= 0.9  # the caller waited on a silent line


def test_dtmf_messages_and_server_close_code() -> None:
    core = make(CallPlan().dtmf("1#", gap_secs=0.0).pause(5), t0=0.0)
    core.open(0.0)
    out = core.on_tick(0.02) + core.on_tick(0.04)
    digits = [json.loads(m)["dtmf"] for m in out if '"dtmf"' in m]
    assert digits == [
        {"track": "inbound_track", "digit": "1"},
        {"track": "inbound_track", "digit": "#"},
    ]
    core.on_closed(1.0, 1011, "gemini error")
    res = core.result(1.0)
    assert not res.ok and res.failure == "stream: closed 1011 gemini error"
    assert "1011" in res.end_reason


def test_result_roundtrips_through_dict() -> None:
    core = make(CallPlan().hangup(), t0=0.0)
    core.open(0.0)
    core.on_tick(0.02)
    res = core.result(0.1)
    again = CallResult.from_dict(json.loads(json.dumps(res.to_dict())))
    assert again == res


def test_audio_helpers() -> None:
    assert ulaw_rms(QUIET) == 0.0 and ulaw_rms(LOUD) > 10000
    ulaw = read_wav_as_ulaw("sim/assets/caller_hello.wav")
    assert len(ulaw) > 8000 and Utterance.from_wav(
        "caller_hello.wav"
    ).duration_secs == pytest.approx(math.ceil(len(ulaw) / FRAME_BYTES) * 0.02)
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5 and percentile([], 50) is None
