"""Caller input limits without sockets: the JSON parser, the rate buckets, the serializer."""

from __future__ import annotations

import base64
import json

import pytest

from bot.request_limits import runner_options
from pipelines.twilio.input_limits import (
    AUDIO_BURST_SECS,
    AUDIO_DROP_CLOSE_SECS,
    MAX_JSON_DEPTH,
    MESSAGE_BURST,
    MESSAGE_DROP_CLOSE,
    InputLimits,
    RateBucket,
    json_depth,
    parse_message,
)
from pipelines.twilio.serializer import TwilioSerializer

pytestmark = pytest.mark.unit

START = {
    "event": "start",
    "sequenceNumber": "1",
    "streamSid": "MZ1",
    "start": {
        "streamSid": "MZ1",
        "callSid": "CA1",
        "tracks": ["inbound"],
        "customParameters": {"persona": "frontdesk", "note": "[{not json}]"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    },
}


def nested(levels: int, opener: str = "[", closer: str = "]") -> str:
    return opener * levels + closer * levels


@pytest.mark.parametrize(
    "text",
    [nested(1000), nested(100_000), '{"a":' * 1000 + "1" + "}" * 1000, nested(MAX_JSON_DEPTH + 1)],
)
def test_deep_json_is_too_deep_and_never_raises(text: str) -> None:
    assert parse_message(text) == (None, "too_deep")


def test_twilio_messages_parse_and_brackets_in_strings_do_not_count() -> None:
    assert parse_message(json.dumps(START)) == (START, None)
    inside = json.dumps({"event": "mark", "mark": {"name": "[" * 500 + '\\"{' * 100}})
    value, bad = parse_message(inside)
    assert bad is None and value["event"] == "mark"
    assert json_depth(inside) == 2
    assert parse_message(nested(MAX_JSON_DEPTH))[1] is None
    # Flat but bracket-heavy: scanned, found shallow, parsed.
    assert parse_message("[" + ",".join(["[]"] * 100) + "]")[1] is None


@pytest.mark.parametrize("text", ["not json", '{"event": "media"', "[" * 5 + "1", ""])
def test_broken_json_is_invalid_json(text: str) -> None:
    assert parse_message(text) == (None, "invalid_json")


def test_real_time_audio_passes_and_faster_audio_is_dropped() -> None:
    bucket = RateBucket(1.0, AUDIO_BURST_SECS, now=0.0)
    # 60 s of 20 ms frames at real time: every one passes.
    assert all(bucket.take(0.02, i * 0.02) for i in range(3000))
    assert bucket.dropped == 0
    # A stall of the burst's length: the bunch that follows passes in full.
    now = 60.0 + AUDIO_BURST_SECS
    assert all(bucket.take(0.02, now) for _ in range(int(AUDIO_BURST_SECS / 0.02) - 1))
    assert not bucket.take(0.5, now)
    assert bucket.dropped == pytest.approx(0.5)
    assert bucket.take(0.5, now + 0.6)  # refilled at real time


def test_the_billing_attack_is_bounded_and_ends_the_call() -> None:
    limits = InputLimits(now=0.0)
    limits.credit_backlog(0.0)
    passed = 0.0
    closed_after = None
    for i in range(100):  # 100 messages of 5.6 s in 0.7 s
        now = i * 0.007
        if limits.audio(5.6, now):
            passed += 5.6
        if limits.abuse() and closed_after is None:
            closed_after = i
    assert passed == 0.0  # no single 5.6 s message fits a 2 s allowance
    assert closed_after == 1  # the second one dropped is over the 10 s bound
    reason = limits.abuse()
    assert reason is not None and "faster than real time" in reason
    # 20 ms frames as fast as possible: the allowance passes, then nothing.
    limits = InputLimits(now=0.0)
    passed = sum(0.02 for _ in range(28_000) if limits.audio(0.02, 0.5))
    assert passed == pytest.approx(AUDIO_BURST_SECS, abs=0.02)
    assert limits.audio_bucket.dropped > AUDIO_DROP_CLOSE_SECS


def test_a_backlog_from_call_set_up_is_not_counted_as_too_fast() -> None:
    # Set-up took 4 s: Twilio's audio of those 4 s waits in the socket and arrives at once.
    limits = InputLimits(now=0.0)
    limits.credit_backlog(4.0)
    assert all(limits.audio(0.02, 4.0) for _ in range(200))
    assert all(limits.message(4.0) for _ in range(200))
    assert all(limits.audio(0.02, 4.0 + i * 0.02) for i in range(1, 500))
    assert limits.abuse() is None


def test_a_message_flood_is_dropped_then_closed() -> None:
    limits = InputLimits(now=0.0)
    allowed = sum(1 for _ in range(int(MESSAGE_BURST) + MESSAGE_DROP_CLOSE) if limits.message(0))
    assert allowed == MESSAGE_BURST
    assert limits.abuse() is None  # exactly at the bound
    assert not limits.message(0.0)
    reason = limits.abuse()
    assert reason is not None and "too many messages" in reason


async def test_the_serializer_counts_deep_json_and_goes_on() -> None:
    serializer = TwilioSerializer("MZ1", input_rate=8000)
    assert await serializer.deserialize(nested(1000)) is None
    assert await serializer.deserialize('{"a":' * 5000 + "}" * 5000) is None
    assert await serializer.deserialize("nope") is None
    assert serializer.bad_input == {"too_deep": 2, "invalid_json": 1}
    payload = base64.b64encode(b"\xff" * 160).decode()
    frame = await serializer.deserialize(
        json.dumps({"event": "media", "streamSid": "MZ1", "media": {"payload": payload}})
    )
    assert frame is not None


def test_note_bad_input_adds_amounts() -> None:
    serializer = TwilioSerializer("MZ1", input_rate=8000)
    serializer.note_bad_input("audio_too_fast_ms", "x", 5600)
    serializer.note_bad_input("audio_too_fast_ms", "x", 20)
    assert serializer.bad_input == {"audio_too_fast_ms": 5620}


def test_runner_options_bound_header_time_and_lingering() -> None:
    assert runner_options() == {"keepalive_timeout": 15.0, "lingering_time": 1.0}
    assert runner_options(0.1)["keepalive_timeout"] == pytest.approx(1.5)
