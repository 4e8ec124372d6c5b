"""Unit tests for the Twilio serializer: defined answers to bad input, marks, pass-through."""

import audioop
import base64
import json
from types import SimpleNamespace
from typing import cast

import pytest
from loguru import logger
from pipecat.frames.frames import (
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
)
from pipecat.processors.frame_processor import FrameProcessorSetup
from pipecat.serializers.base_serializer import FrameSerializer

from pipelines.twilio.serializer import (
    TwilioMarkEchoFrame,
    TwilioMarkFrame,
    TwilioSerializer,
    TwilioStopFrame,
)

pytestmark = pytest.mark.unit

SID = "MZ123"


async def make(in_rate: int = 16000, out_rate: int = 8000) -> TwilioSerializer:
    serializer = TwilioSerializer(SID, "CA1")
    # The serializer reads only the input rate from the setup.
    setup = SimpleNamespace(audio_in_sample_rate=in_rate, audio_out_sample_rate=out_rate)
    await serializer.setup(cast(FrameProcessorSetup, setup))
    return serializer


async def ser(serializer: TwilioSerializer, frame: Frame) -> str:
    out = await serializer.serialize(frame)
    assert isinstance(out, str)
    return out


def media(payload: str, sid: str = SID) -> str:
    return json.dumps({"event": "media", "streamSid": sid, "media": {"payload": payload}})


GOOD_PAYLOAD = base64.b64encode(b"\xff" * 160).decode()

BAD_INPUTS = [
    ("not json at all", "invalid_json"),
    ("[1, 2]", "invalid_json"),
    (b"\x00\x01", "binary"),
    (json.dumps({"event": "hello", "streamSid": SID}), "unknown_event"),
    (json.dumps({"streamSid": SID}), "unknown_event"),
    (json.dumps({"event": "start", "streamSid": SID, "start": {}}), "duplicate_start"),
    (media(GOOD_PAYLOAD, sid="MZother"), "wrong_stream_sid"),
    (json.dumps({"event": "media", "media": {"payload": GOOD_PAYLOAD}}), "missing_fields"),
    (json.dumps({"event": "media", "streamSid": SID, "media": "x"}), "missing_fields"),
    (json.dumps({"event": "media", "streamSid": SID, "media": {"payload": 5}}), "missing_fields"),
    (media("!!!not base64!!!"), "invalid_payload"),
    (media(""), "invalid_payload"),
    (json.dumps({"event": "dtmf", "streamSid": SID, "dtmf": {"digit": "Z"}}), "invalid_dtmf"),
    (json.dumps({"event": "dtmf", "streamSid": SID, "dtmf": {}}), "missing_fields"),
    (json.dumps({"event": "mark", "streamSid": SID, "mark": {}}), "missing_fields"),
]


@pytest.mark.parametrize(("data", "kind"), BAD_INPUTS)
async def test_bad_input_is_ignored_and_counted(data: str | bytes, kind: str) -> None:
    serializer = await make()
    assert await serializer.deserialize(data) is None
    assert await serializer.deserialize(data) is None
    assert serializer.bad_input == {kind: 2}


async def test_one_warning_per_kind_per_call() -> None:
    serializer = await make()
    lines: list[str] = []
    sink = logger.add(lines.append, level="WARNING", format="{message}")
    try:
        for _ in range(100):
            await serializer.deserialize("garbage")
            await serializer.deserialize(media("%%%"))
    finally:
        logger.remove(sink)
    assert serializer.bad_input == {"invalid_json": 100, "invalid_payload": 100}
    assert len(lines) == 2
    assert all("garbage" not in line for line in lines)  # no payload data in logs


async def test_good_messages() -> None:
    serializer = await make()
    audio = await serializer.deserialize(media(GOOD_PAYLOAD))
    assert isinstance(audio, InputAudioRawFrame)
    assert audio.sample_rate == 16000
    # 20 ms in, 20 ms out: the FIR resampler holds nothing back.
    assert len(audio.audio) == 640
    dtmf = await serializer.deserialize(
        json.dumps({"event": "dtmf", "streamSid": SID, "dtmf": {"digit": "5"}})
    )
    assert isinstance(dtmf, InputDTMFFrame)
    assert dtmf.button.value == "5"
    mark = await serializer.deserialize(
        json.dumps({"event": "mark", "streamSid": SID, "mark": {"name": "reply-1"}})
    )
    assert isinstance(mark, TwilioMarkEchoFrame)
    assert mark.mark_name == "reply-1"
    stop = await serializer.deserialize(json.dumps({"event": "stop", "streamSid": SID}))
    assert isinstance(stop, TwilioStopFrame)
    assert serializer.bad_input == {}


async def test_output_at_8k_is_not_resampled() -> None:
    serializer = await make()
    pcm = bytes(range(256)) * 5  # 640 bytes = 40 ms at 8 kHz
    out = json.loads(await ser(serializer, OutputAudioRawFrame(pcm, 8000, 1)))
    assert out["event"] == "media"
    assert base64.b64decode(out["media"]["payload"]) == audioop.lin2ulaw(pcm, 2)


async def test_clear_and_mark_serialization() -> None:
    serializer = await make()
    clear = json.loads(await ser(serializer, InterruptionFrame()))
    assert clear == {"event": "clear", "streamSid": SID}
    mark = json.loads(await ser(serializer, TwilioMarkFrame(mark_name="m1")))
    assert mark == {"event": "mark", "streamSid": SID, "mark": {"name": "m1"}}


async def test_auto_hang_up_follows_credentials() -> None:
    assert not TwilioSerializer(SID, "CA1").auto_hang_up
    assert not TwilioSerializer(SID, "CA1", account_sid="AC1").auto_hang_up
    with_creds = TwilioSerializer(SID, "CA1", account_sid="AC1", auth_token="tok")
    assert with_creds.auto_hang_up
    # Without credentials an EndFrame serializes to nothing and makes no REST call.
    assert await (await make()).serialize(EndFrame()) is None


async def test_output_at_other_rates_is_resampled_to_8k_without_gaps() -> None:
    serializer = await make()
    pcm_24k = b"\x10\x00" * 1440  # 60 ms at 24 kHz
    for _ in range(3):
        out = json.loads(await ser(serializer, OutputAudioRawFrame(pcm_24k, 24000, 1)))
        # 60 ms at 8 kHz mu-law each time: the FIR resampler holds nothing back.
        assert len(base64.b64decode(out["media"]["payload"])) == 480
    assert await serializer.serialize(OutputAudioRawFrame(b"", 8000, 1)) is None


async def test_mark_names_are_json_escaped() -> None:
    serializer = await make()
    mark = json.loads(await ser(serializer, TwilioMarkFrame(mark_name='say "hi"\\')))
    assert mark["mark"] == {"name": 'say "hi"\\'}


async def test_transport_messages_are_sent_and_rtvi_ones_dropped() -> None:
    serializer = await make()
    sent = await ser(serializer, OutputTransportMessageFrame(message={"event": "x"}))
    assert json.loads(sent) == {"event": "x"}
    rtvi = OutputTransportMessageFrame(message={"label": "rtvi-ai", "type": "bot-ready"})
    assert await serializer.serialize(rtvi) is None


def test_auto_hang_up_without_credentials_is_refused_with_the_fix() -> None:
    params = TwilioSerializer.InputParams(auto_hang_up=True)
    with pytest.raises(ValueError, match=r"missing: account_sid, auth_token\. Pass them"):
        TwilioSerializer(SID, "CA1", params=params)


def test_owned_on_the_public_frame_serializer_base() -> None:
    """Not a subclass of Pipecat's Twilio serializer (issue 11: no private attributes)."""
    assert issubclass(TwilioSerializer, FrameSerializer)
    assert all(k.__module__ != "pipecat.serializers.twilio" for k in TwilioSerializer.__mro__)


def compact(message: dict[str, object]) -> str:
    """JSON the way Twilio writes it: no spaces, ``event`` first."""
    return json.dumps(message, separators=(",", ":"))


def twilio_media(payload: str, sid: str = SID) -> str:
    return compact(
        {
            "event": "media",
            "sequenceNumber": "4",
            "media": {"track": "inbound", "chunk": "3", "timestamp": "60", "payload": payload},
            "streamSid": sid,
        }
    )


async def test_media_fast_path_gives_the_same_audio_as_deserialize() -> None:
    serializer = await make(in_rate=8000)
    payload = base64.b64encode(bytes(range(160))).decode()
    frame = await serializer.deserialize(twilio_media(payload))
    assert isinstance(frame, InputAudioRawFrame) and frame.sample_rate == 8000
    assert serializer.media_pcm(twilio_media(payload)) == frame.audio
    # Only at Twilio's rate: at 16 kHz the serializer's own path does the resampling.
    assert (await make(in_rate=16000)).media_pcm(twilio_media(payload)) is None


@pytest.mark.parametrize(
    "data",
    [
        twilio_media(GOOD_PAYLOAD, sid="MZother"),
        twilio_media("!!!not base64!!!"),
        twilio_media(""),
        twilio_media(GOOD_PAYLOAD)[:-1],  # truncated
        twilio_media(GOOD_PAYLOAD.replace("/", "\\/")) if "/" in GOOD_PAYLOAD else "{}",
        compact({"event": "media", "streamSid": SID, "media": {"payload": 5}}),
        compact({"event": "media", "streamSid": SID}),
        media(GOOD_PAYLOAD),  # spaced JSON: valid, left to the full parser
        compact({"event": "mark", "streamSid": SID, "mark": {"name": "a"}}),
    ],
)
async def test_media_fast_path_leaves_everything_else_to_deserialize(data: str) -> None:
    serializer = await make(in_rate=8000)
    assert serializer.media_pcm(data) is None
    assert serializer.bad_input == {}
