"""The audio fast path of the Live API receive gives what google-genai would (no sockets)."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest
from google.genai import _live_converters as converters
from google.genai import types

from pipelines.live_receive import audio_message

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
