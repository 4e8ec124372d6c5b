"""The audio fast path of the Live API receive gives what google-genai would (no sockets)."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest
from google.genai import _live_converters as converters
from google.genai import errors, types

from pipelines.gemini.live_receive import audio_message, parse, unbundle

pytestmark = pytest.mark.unit


def _sdk(response: dict[str, Any]) -> types.LiveServerMessage:
    body = converters._LiveServerMessage_from_mldev(json.loads(json.dumps(response)))
    return types.LiveServerMessage._from_response(response=body, kwargs={})


def _audio(n: int, seed: int = 3) -> bytes:
    rng = np.random.default_rng(seed)
    return rng.integers(-32768, 32767, n, dtype=np.int16).tobytes()


def _turn(*parts: dict[str, Any], role: str | None = None) -> dict[str, Any]:
    turn: dict[str, Any] = {"parts": list(parts)}
    if role:
        turn["role"] = role
    return {"serverContent": {"modelTurn": turn}}


def _part(pcm: bytes, *, urlsafe: bool = False) -> dict[str, Any]:
    enc = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    return {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": enc(pcm).decode()}}


@pytest.mark.parametrize(
    "response",
    [
        _turn(_part(_audio(1920))),
        _turn(_part(_audio(960)), _part(_audio(480, seed=4)), role="model"),
        _turn(_part(_audio(960), urlsafe=True)),
    ],
)
def test_audio_messages_equal_the_sdks(response: dict[str, Any]) -> None:
    fast = audio_message(json.loads(json.dumps(response)))
    sdk = _sdk(response)
    assert fast is not None
    assert fast == sdk
    assert fast.model_dump() == sdk.model_dump()
    assert fast.model_fields_set == sdk.model_fields_set
    assert fast.server_content is not None and sdk.server_content is not None
    assert fast.server_content.model_fields_set == sdk.server_content.model_fields_set
    assert fast.data == sdk.data


@pytest.mark.parametrize(
    "response",
    [
        {"serverContent": {"turnComplete": True}},
        {"serverContent": {"interrupted": True}},
        {"setupComplete": {}},
        {"serverContent": {"modelTurn": {"parts": [{"text": "hi"}]}}},
        {"serverContent": {"modelTurn": {"parts": [_part(b"\x00\x01")]}, "turnComplete": True}},
        {"serverContent": {"modelTurn": {"parts": []}}},
        {"goAway": {"timeLeft": "5s"}},
        [1, 2],
    ],
)
def test_anything_else_takes_the_sdk_path(response: Any) -> None:
    assert audio_message(response) is None


def _bundled(*parts: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A 3.x message: several parts plus transcript fragments (and more) in one serverContent."""
    return {"serverContent": {"modelTurn": {"parts": list(parts)}, **fields}}


@pytest.mark.parametrize(
    "response",
    [
        _bundled(
            _part(_audio(1920)),
            _part(_audio(1920, seed=5)),
            _part(_audio(1920, seed=6)),
            outputTranscription={"text": " 3.87 s]"},
        ),
        _bundled(
            _part(_audio(960)), inputTranscription={"text": "[caller"}, generationComplete=True
        ),
        {"serverContent": {"outputTranscription": {"text": "Sure,", "finished": False}}},
        {"serverContent": {"inputTranscription": {"text": " what's my"}}},
    ],
)
def test_bundled_content_equals_the_sdks(response: dict[str, Any]) -> None:
    fast = audio_message(json.loads(json.dumps(response)))
    sdk = _sdk(response)
    assert fast is not None
    assert fast == sdk
    assert fast.model_dump() == sdk.model_dump()
    assert fast.server_content is not None and sdk.server_content is not None
    assert fast.server_content.model_fields_set == sdk.server_content.model_fields_set
    assert fast.data == sdk.data


@pytest.mark.parametrize(
    "response",
    [
        {"usageMetadata": {"promptTokenCount": 3}},
        {"serverContent": {}, "usageMetadata": {"promptTokenCount": 3}},
        _bundled(_part(_audio(960)), turnComplete=True),
        {"serverContent": {"outputTranscription": {"text": "hi", "languageCode": "en"}}},
        {"serverContent": {"generationComplete": "yes"}},
    ],
)
def test_turn_ends_usage_and_unusual_content_take_the_sdk_path(response: Any) -> None:
    assert audio_message(response) is None


def test_unbundle_plays_every_part_in_order_and_ends_the_turn_last() -> None:
    pcm = [_audio(1920, seed=s) for s in (1, 2, 3)]
    message = _sdk(
        {
            "serverContent": {
                "modelTurn": {"parts": [_part(x) for x in pcm]},
                "inputTranscription": {"text": "[caller"},
                "outputTranscription": {"text": "[bot audio"},
                "generationComplete": True,
                "turnComplete": True,
            },
            "usageMetadata": {"promptTokenCount": 7, "responseTokenCount": 3},
        }
    )
    pieces = unbundle(message)
    # The caller's words first, then one message per part (Pipecat reads parts[0] only),
    # then the transcript, the turn's end and the usage together.
    assert pieces[0].server_content.input_transcription.text == "[caller"
    assert pieces[0].data is None
    audio = [p.server_content.model_turn.parts for p in pieces[1:4]]
    assert [len(parts) for parts in audio] == [1, 1, 1]
    assert [parts[0].inline_data.data for parts in audio] == pcm
    last = pieces[4]
    assert last.server_content.model_turn is None
    assert last.server_content.output_transcription.text == "[bot audio"
    assert last.server_content.turn_complete and last.server_content.generation_complete
    assert last.usage_metadata.prompt_token_count == 7
    assert len(pieces) == 5
    assert b"".join(p.data or b"" for p in pieces) == b"".join(pcm)


def test_unbundle_leaves_plain_messages_alone() -> None:
    one = _sdk(_turn(_part(_audio(960))))
    usage = _sdk({"usageMetadata": {"promptTokenCount": 3}})
    tc = _sdk({"serverContent": {"turnComplete": True}})
    for message in (one, usage, tc):
        assert unbundle(message) == [message]
        assert unbundle(message)[0] is message
    two = unbundle(_sdk(_turn(_part(_audio(960)), _part(_audio(480, seed=9)))))
    assert len(two) == 2  # nothing else in the message: no trailing empty message


@pytest.mark.parametrize(
    "response",
    [
        # Every kind of message the emulator sends, and unknown fields a newer server may add.
        {"setupComplete": {}},
        {"serverContent": {"turnComplete": True}, "usageMetadata": {"promptTokenCount": 3}},
        {"serverContent": {"interrupted": True}},
        {"serverContent": {"generationComplete": True, "futureField": 1}},
        {"serverContent": {"inputTranscription": {"text": "hi", "languageCode": "en"}}},
        {"serverContent": {"modelTurn": {"parts": [_part(b"\x00\x01")]}, "turnComplete": True}},
        {"toolCall": {"functionCalls": [{"id": "fc-1", "name": "end_call", "args": {"a": 1}}]}},
        {"toolCallCancellation": {"ids": ["fc-1"]}},
        {"goAway": {"timeLeft": "5s"}},
        {"sessionResumptionUpdate": {"newHandle": "h-1", "resumable": True,
                                     "lastConsumedClientMessageIndex": "7"}},
        {"usageMetadata": {"promptTokenCount": 3, "responseTokensDetails": [
            {"modality": "AUDIO", "tokenCount": 9}]}, "somethingNew": {"x": 1}},
        _turn(_part(_audio(960)), _part(_audio(480, seed=4))),
    ],
)  # fmt: skip
def test_parse_equals_the_sdks(response: dict[str, Any]) -> None:
    raw = json.dumps(response).encode()
    parsed = parse(raw)
    sdk = _sdk(response)
    assert parsed == sdk
    assert parsed.model_dump() == sdk.model_dump()


def test_parse_refuses_what_the_sdk_refuses() -> None:
    with pytest.raises(ValueError, match="Failed to parse"):
        parse(b"{not json")
    with pytest.raises(errors.APIError):
        parse(json.dumps({"code": 400, "message": "bad"}).encode())
    assert parse(b"") == types.LiveServerMessage()
