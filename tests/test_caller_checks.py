"""The caller checks the server like Twilio: validation, playout delay, marks, timestamps."""

from __future__ import annotations

import base64
import json

import pytest

from sim.caller.core import CallerCore
from sim.caller.line_noise import LineNoise
from sim.caller.plan import FRAME_BYTES, CallPlan
from sim.caller.twilio_checks import BadMessage, check_message

pytestmark = pytest.mark.unit

LOUD = bytes([0x00, 0x80]) * (FRAME_BYTES // 2)
B64 = base64.b64encode(LOUD).decode()
SID = "MZ1"


def media(payload: object = B64, sid: object = SID, **extra: object) -> str:
    return json.dumps({"event": "media", "streamSid": sid, "media": {"payload": payload}, **extra})


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_json"),
        (json.dumps({"streamSid": SID}), "unknown_event"),
        (json.dumps({"event": "start", "streamSid": SID}), "unknown_event"),
        (json.dumps({"event": "Media", "streamSid": SID}), "unknown_event"),
        (media(sid="MZother"), "wrong_stream_sid"),
        (json.dumps({"event": "clear"}), "wrong_stream_sid"),
        (media(sequenceNumber="3"), "extra_fields"),
        (json.dumps({"event": "clear", "streamSid": SID, "x": 1}), "extra_fields"),
        (
            json.dumps(
                {"event": "media", "streamSid": SID, "media": {"payload": B64, "track": "x"}}
            ),
            "extra_fields",
        ),
        (json.dumps({"event": "media", "streamSid": SID}), "missing_fields"),
        (json.dumps({"event": "mark", "streamSid": SID, "mark": "m1"}), "missing_fields"),
        (media(payload="not base64!"), "invalid_payload"),
        (media(payload=B64[:-1]), "invalid_payload"),  # truncated: bad padding
        (media(payload=""), "invalid_payload"),
        (media(payload=123), "invalid_payload"),
        (json.dumps({"event": "mark", "streamSid": SID, "mark": {"name": ""}}), "invalid_mark"),
        (json.dumps({"event": "mark", "streamSid": SID, "mark": {"name": 7}}), "invalid_mark"),
        (json.dumps({"event": "mark", "streamSid": SID, "mark": {}}), "invalid_mark"),
    ],
)
def test_each_rule_rejects_what_twilio_drops(text: str, kind: str) -> None:
    with pytest.raises(BadMessage) as e:
        check_message(text, SID)
    assert e.value.kind == kind and e.value.twilio_error == 31951


def test_valid_messages_pass() -> None:
    assert check_message(media(), SID) == ("media", LOUD)
    mark = json.dumps({"event": "mark", "streamSid": SID, "mark": {"name": "utt-1"}})
    assert check_message(mark, SID) == ("mark", "utt-1")
    assert check_message(json.dumps({"event": "clear", "streamSid": SID}), SID) == ("clear", None)


def make(delay_secs: float = 0.06) -> CallerCore:
    plan = CallPlan(line_noise=LineNoise(dbfs=None), playout_delay_secs=delay_secs).pause(30)
    core = CallerCore(plan, t0=0.0, call_sid="CA1", account_sid="AC1", stream_sid=SID)
    core.open(0.0)
    return core


def test_invalid_messages_are_dropped_counted_by_kind_and_noted_once() -> None:
    core = make()
    core.on_message(media(sid="MZother"), 0.1)
    core.on_message(media(sid="MZother"), 0.2)
    core.on_message(json.dumps({"event": "mark", "streamSid": SID, "mark": {"name": ""}}), 0.3)
    core.on_binary(100, 0.4)
    res = core.result(0.5)
    assert res.protocol_errors == {"wrong_stream_sid": 2, "invalid_mark": 1, "binary": 1}
    assert res.protocol_error_count == 4
    assert res.audio_received_secs == 0.0 and res.marks_echoed == 0  # dropped, not acted on
    notes = [e.detail for e in res.events if e.kind == "protocol"]
    assert len(notes) == 3  # one per kind
    assert any("31950" in n for n in notes) and any("31951" in n for n in notes)
    assert res.ok  # Twilio drops the message; the call goes on


def test_latency_is_measured_to_when_the_audio_is_heard() -> None:
    core = make(delay_secs=0.06)
    core.on_message(media(), 0.5)  # arrives at an empty buffer: plays at 0.56
    res = core.result(0.6)
    assert res.greeting_ms == pytest.approx(560.0)
    # audio arriving while earlier audio plays is queued behind it, not delayed again
    start, dry = core.buffer.push(LOUD, 0.57, True)
    assert start == pytest.approx(0.58) and dry == 0.0
    # after an underrun the buffer primes again
    start, dry = core.buffer.push(LOUD, 1.0, True)
    assert start == pytest.approx(1.06) and dry == pytest.approx(0.4)


def test_marks_come_back_after_the_delayed_audio_has_played() -> None:
    core = make(delay_secs=0.06)
    for _ in range(5):  # 100 ms of audio arriving at 0: plays 0.06-0.16
        core.on_message(media(), 0.0)
    mark = json.dumps({"event": "mark", "streamSid": SID, "mark": {"name": "end"}})
    assert core.on_message(mark, 0.0) == []
    assert not any('"mark"' in m for m in core.on_tick(0.14))
    echoed = [json.loads(m) for m in core.on_tick(0.16) if '"mark"' in m]
    assert [m["mark"]["name"] for m in echoed] == ["end"]
    # audio still waiting in Twilio's buffer counts: a mark behind it waits too
    core.on_message(media(), 1.0)
    assert core.on_message(mark.replace("end", "m2"), 1.01) == []


def test_clear_returns_every_pending_mark_at_once_and_drops_unheard_audio() -> None:
    core = make(delay_secs=0.06)
    for i in range(3):
        core.on_message(media(), 0.0)
        core.on_message(
            json.dumps({"event": "mark", "streamSid": SID, "mark": {"name": f"m{i}"}}), 0.0
        )
    out = core.on_message(json.dumps({"event": "clear", "streamSid": SID}), 0.03)
    assert [json.loads(m)["mark"]["name"] for m in out] == ["m0", "m1", "m2"]
    res = core.result(0.1)
    assert res.audio_cleared_secs == pytest.approx(0.06)  # none of it had started playing
    assert res.audio_played_secs == pytest.approx(0.0)


def test_media_timestamps_follow_the_clock_and_start_above_zero() -> None:
    core = make()
    ticks = [0.0, 0.021, 0.043, 0.059, 0.059, 0.1]  # jittery, one repeated instant
    stamps = [int(json.loads(core.on_tick(t)[-1])["media"]["timestamp"]) for t in ticks]
    assert stamps[0] >= 1 and stamps == sorted(set(stamps))  # strictly increasing
    assert stamps[1:4] == [21, 43, 59] and stamps[4] == 60 and stamps[5] == 100
    chunks = [
        json.loads(m)["media"]["chunk"] for m in (core.on_tick(0.12)[-1], core.on_tick(0.14)[-1])
    ]
    assert chunks == ["7", "8"]
