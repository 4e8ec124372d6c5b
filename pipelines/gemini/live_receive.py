"""Server messages of the Live API as ``LiveServerMessage``: a fast path for audio, and unbundling.

google-genai parses every server message with ``json.loads``, a converter pass and a full
pydantic validation (~65 us for an 80 ms audio chunk, ~20 of them per second per call while the
bot talks). Most messages in a call are one ``serverContent`` with a ``modelTurn`` of
``inlineData`` parts (several on 3.x), transcript fragments and ``generationComplete``;
``audio_message`` builds those with ``model_construct`` (no validation). ``parse`` takes a raw
message from the socket (``pipelines._compat.genai_session.receive_raw``): the fast path first,
anything else validated with the public types after dropping unknown fields, as the SDK does.
``tests/test_live_receive.py`` checks both equal the SDK's own parse.

``unbundle`` splits a 3.x message that bundles several parts (and transcripts, ``turnComplete``)
into messages of at most one part, in wire order, so every part's audio is played and the turn
ends only after all of it.
"""

from __future__ import annotations

import binascii
import json
import typing
from typing import Any, TypeVar

from google.genai import errors
from google.genai.types import (
    Blob,
    Content,
    LiveServerContent,
    LiveServerMessage,
    Part,
    Transcription,
)
from pydantic import BaseModel

_TURN_KEYS = frozenset({"parts", "role"})
_BLOB_KEYS = frozenset({"data", "mimeType"})
_TRANSCRIPTS = {"inputTranscription": "input_transcription",
                "outputTranscription": "output_transcription"}  # fmt: skip
_CONTENT_KEYS = frozenset({"modelTurn", "generationComplete", *_TRANSCRIPTS})
_URLSAFE = str.maketrans("-_", "+/")
_T = TypeVar("_T", bound=BaseModel)


def _all_none_defaults(cls: type[BaseModel]) -> dict[str, Any] | None:
    fields = cls.model_fields
    if any(f.default is not None or f.default_factory is not None for f in fields.values()):
        return None
    return dict.fromkeys(fields)


_MODELS: tuple[type[BaseModel], ...] = (
    Blob,
    Part,
    Content,
    LiveServerContent,
    LiveServerMessage,
    Transcription,
)
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
    """The message for a decoded JSON ``response`` of plain content, else None.

    Plain content: ``serverContent`` with only inline audio, transcript fragments and
    ``generationComplete``.
    """
    if not isinstance(response, dict) or len(response) != 1:
        return None
    sc = response.get("serverContent")
    if not isinstance(sc, dict) or not sc or not sc.keys() <= _CONTENT_KEYS:
        return None
    fields: dict[str, Any] = {}
    if "modelTurn" in sc:
        content = _model_turn(sc["modelTurn"])
        if content is None:
            return None
        fields["model_turn"] = content
    for key, name in _TRANSCRIPTS.items():
        if key in sc:
            transcript = _transcription(sc[key])
            if transcript is None:
                return None
            fields[name] = transcript
    if "generationComplete" in sc:
        done = sc["generationComplete"]
        if not isinstance(done, bool):
            return None
        fields["generation_complete"] = done
    return _construct(LiveServerMessage, server_content=_construct(LiveServerContent, **fields))


def _model_turn(turn: Any) -> Content | None:
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
    return _construct(Content, parts=out, role=role)


def _transcription(value: Any) -> Transcription | None:
    if not isinstance(value, dict) or not value.keys() <= {"text", "finished"}:
        return None
    text, finished = value.get("text"), value.get("finished")
    if not (text is None or isinstance(text, str)):
        return None
    if not (finished is None or isinstance(finished, bool)):
        return None
    return _construct(Transcription, **value)


def _set(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def unbundle(message: LiveServerMessage) -> list[LiveServerMessage]:
    """``message`` as messages of at most one audio part each, in the order of the wire.

    A ``modelTurn`` of several parts becomes one message per part, and the caller's transcript
    bundled with it comes first (it describes earlier speech). Everything else
    (``outputTranscription``, ``generationComplete``, ``turnComplete``, ``usageMetadata``, tool
    calls, resumption updates) stays together in one message after the last part, so the turn
    ends only after all of its audio. Any other message is returned as is.
    """
    sc = message.server_content
    turn = sc.model_turn if sc is not None else None
    if sc is None or turn is None or not turn.parts:
        return [message]
    if len(turn.parts) == 1 and sc.input_transcription is None:
        return [message]
    pieces: list[LiveServerMessage] = []
    first = _set(input_transcription=sc.input_transcription, interrupted=sc.interrupted)
    if first:
        sc_first = _construct(LiveServerContent, **first)
        pieces.append(_construct(LiveServerMessage, server_content=sc_first))
    grounding = _set(grounding_metadata=sc.grounding_metadata)
    for part in turn.parts:
        content = _construct(Content, parts=[part], role=turn.role)
        sc_part = _construct(LiveServerContent, model_turn=content, **grounding)
        pieces.append(_construct(LiveServerMessage, server_content=sc_part))
    rest = sc.model_copy(update={"model_turn": None, "input_transcription": None,
                                 "interrupted": None})  # fmt: skip
    rest_set = {k for k in rest.model_fields_set if getattr(rest, k) is not None}
    others = {k for k in message.model_fields_set if getattr(message, k) is not None}
    if rest_set or others - {"server_content"}:
        pieces.append(message.model_copy(update={"server_content": rest if rest_set else None}))
    return pieces


def parse(raw: bytes | str) -> LiveServerMessage:
    """One raw server message as a ``LiveServerMessage``, equal to what the SDK's receive gives.

    Plain audio content takes ``audio_message`` (no validation); anything else is validated
    with the public types, after dropping the fields this SDK version does not know (as the
    SDK does, for forward compatibility).

    Raises:
        ValueError: ``raw`` is not JSON.
        google.genai.errors.APIError: A message with none of the known fields (an error
            the server reports in-band), as the SDK raises it.
    """
    if raw:
        try:
            response = json.loads(raw)
        except json.decoder.JSONDecodeError:
            raise ValueError(f"Failed to parse response: {raw!r}") from None
    else:
        response = {}
    fast = audio_message(response)
    if fast is not None:
        return fast
    known = _known_fields(LiveServerMessage, response) if isinstance(response, dict) else {}
    if not known and response:
        code = response.get("code") if isinstance(response, dict) else None
        errors.APIError.raise_error(code if isinstance(code, int) else 500, response, None)
    return LiveServerMessage.model_validate(known)


def _model_type(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation holds (``X``, ``X | None``, ``list[X]``), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_type(arg)
        if found is not None:
            return found
    return None


def _known_fields(model: type[BaseModel], value: dict[str, Any]) -> dict[str, Any]:
    """``value`` without the keys ``model`` (recursively, its nested models) does not declare.

    google-genai's types forbid unknown fields; a newer server may send fields this SDK does not
    know yet, which the SDK drops before validating (``_remove_extra_fields``). Both the wire
    name (camelCase alias) and the field name are accepted.
    """
    fields = _FIELDS.get(model)
    if fields is None:
        model.model_rebuild(raise_errors=False)
        fields = {}
        for name, info in model.model_fields.items():
            fields[name] = info.annotation
            if info.alias:
                fields[info.alias] = info.annotation
        _FIELDS[model] = fields
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key not in fields:
            continue
        nested = _model_type(fields[key])
        if nested is not None and isinstance(item, dict):
            item = _known_fields(nested, item)
        elif nested is not None and isinstance(item, list):
            item = [_known_fields(nested, x) if isinstance(x, dict) else x for x in item]
        out[key] = item
    return out


_FIELDS: dict[type[BaseModel], dict[str, Any]] = {}
