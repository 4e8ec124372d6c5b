"""A cheaper receive path for Live API sessions: audio messages parsed without pydantic.

google-genai parses every server message with ``json.loads``, a converter pass and a full
pydantic validation (~65 us for an 80 ms audio chunk, ~20 of them per second per call while the
bot talks). Most messages in a call are exactly one ``serverContent.modelTurn`` of
``inlineData`` parts; ``audio_message`` builds those with ``model_construct`` (no validation)
and returns None for anything else, which then takes the SDK's own path.
``install(session)`` swaps the session's ``_receive`` (this session only); the rest of the SDK
(``receive()``, turn completion, errors) is unchanged. ``tests/test_live_receive.py`` checks the
result equals the SDK's.
"""

from __future__ import annotations

import binascii
import json
import types as pytypes
from typing import Any, TypeVar

import websockets
from google.genai import _live_converters as live_converters
from google.genai import errors
from google.genai.types import Blob, Content, LiveServerContent, LiveServerMessage, Part
from pydantic import BaseModel

_TURN_KEYS = frozenset({"parts", "role"})
_BLOB_KEYS = frozenset({"data", "mimeType"})
_URLSAFE = str.maketrans("-_", "+/")
_T = TypeVar("_T", bound=BaseModel)


def _all_none_defaults(cls: type[BaseModel]) -> dict[str, Any] | None:
    fields = cls.model_fields
    if any(f.default is not None or f.default_factory is not None for f in fields.values()):
        return None
    return dict.fromkeys(fields)


_MODELS: tuple[type[BaseModel], ...] = (Blob, Part, Content, LiveServerContent, LiveServerMessage)
_NONE_DEFAULTS: dict[type[BaseModel], dict[str, Any] | None] = {
    cls: _all_none_defaults(cls) for cls in _MODELS
}


def _construct(cls: type[_T], **values: Any) -> _T:
    """``cls.model_construct(**values)`` for models whose defaults are all None, faster.

    ``model_construct`` works the defaults out on every call (~6 us for the wide message
    models); here they are worked out once at import.
    """
    defaults = _NONE_DEFAULTS[cls]
    if defaults is None:
        return cls.model_construct(**values)
    model = cls.__new__(cls)
    fields = dict(defaults)
    fields.update(values)
    object.__setattr__(model, "__dict__", fields)
    object.__setattr__(model, "__pydantic_fields_set__", set(values))
    object.__setattr__(model, "__pydantic_extra__", None)
    object.__setattr__(model, "__pydantic_private__", None)
    return model


def audio_message(response: Any) -> LiveServerMessage | None:
    """The message for a decoded JSON ``response`` that only carries inline data, else None."""
    if not isinstance(response, dict) or len(response) != 1:
        return None
    sc = response.get("serverContent")
    if not isinstance(sc, dict) or len(sc) != 1:
        return None
    turn = sc.get("modelTurn")
    if not isinstance(turn, dict) or not turn.keys() <= _TURN_KEYS:
        return None
    parts = turn.get("parts")
    role = turn.get("role")
    if not isinstance(parts, list) or not parts or not (role is None or isinstance(role, str)):
        return None
    out = []
    for part in parts:
        if not isinstance(part, dict) or len(part) != 1:
            return None
        blob = part.get("inlineData")
        if not isinstance(blob, dict) or not blob.keys() <= _BLOB_KEYS:
            return None
        data, mime = blob.get("data"), blob.get("mimeType")
        if not isinstance(data, str) or not (mime is None or isinstance(mime, str)):
            return None
        if "-" in data or "_" in data:
            data = data.translate(_URLSAFE)
        try:
            raw = binascii.a2b_base64(data)
        except binascii.Error:
            return None
        out.append(_construct(Part, inline_data=_construct(Blob, data=raw, mime_type=mime)))
    content = _construct(Content, parts=out, role=role)
    return _construct(
        LiveServerMessage, server_content=_construct(LiveServerContent, model_turn=content)
    )


async def _receive(self: Any) -> LiveServerMessage:
    """``AsyncSession._receive`` (google-genai 2.34) with the audio fast path first."""
    try:
        raw_response = await self._ws.recv(decode=False)
    except TypeError:
        raw_response = await self._ws.recv()
    except websockets.ConnectionClosed as e:
        if e.rcvd:
            code, reason = e.rcvd.code, e.rcvd.reason
        else:
            code = 1006
            reason = websockets.frames.CLOSE_CODE_EXPLANATIONS.get(code, "Abnormal closure.")
        errors.APIError.raise_error(code, reason, None)
    if raw_response:
        try:
            response = json.loads(raw_response)
        except json.decoder.JSONDecodeError:
            raise ValueError(f"Failed to parse response: {raw_response!r}") from None
    else:
        response = {}
    fast = audio_message(response)
    if fast is not None:
        return fast
    response_dict = live_converters._LiveServerMessage_from_mldev(response)
    if not response_dict and response:
        errors.APIError.raise_error(response.get("code"), response, None)
    return LiveServerMessage._from_response(response=response_dict, kwargs={})


def install(session: Any) -> bool:
    """Use the fast receive path on ``session`` (Gemini API sessions only); True if installed."""
    if session._api_client.vertexai:
        return False
    session._receive = pytypes.MethodType(_receive, session)
    return True
