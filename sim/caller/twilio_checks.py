"""What Twilio accepts on a Media Stream from the server, checked as Twilio checks it.

Twilio takes three events from the server (``media``, ``mark``, ``clear``) as JSON text, each
with the stream's own ``streamSid`` and no other fields. Anything else is an error and is
dropped: a binary frame is 31950, every other bad message 31951 (non-JSON, an unknown event, an
extra field, a wrong ``streamSid``). The simulated caller drops it the same way and counts it
by kind in ``CallResult.protocol_errors``:

=====================  ====================================================================
kind                   the message
=====================  ====================================================================
``binary``             a binary WebSocket frame (31950)
``invalid_json``       text that is not a JSON object
``unknown_event``      ``event`` missing or not one of ``media``, ``mark``, ``clear``
``wrong_stream_sid``   ``streamSid`` missing or not this call's
``extra_fields``       a field Twilio does not define for that event (at any level)
``missing_fields``     ``media`` without ``media``, ``mark`` without ``mark``
``invalid_payload``    ``media.payload`` not a non-empty string of strict base64
``invalid_mark``       ``mark.name`` not a non-empty string
=====================  ====================================================================
"""

from __future__ import annotations

import binascii
import json
from typing import Any

TWILIO_ERRORS = {"binary": 31950}
"""Twilio error code per kind (31951 for every kind not listed)."""
_TOP_FIELDS = {
    "media": frozenset({"event", "streamSid", "media"}),
    "mark": frozenset({"event", "streamSid", "mark"}),
    "clear": frozenset({"event", "streamSid"}),
}
_BODY_FIELDS = {"media": frozenset({"payload"}), "mark": frozenset({"name"})}


class BadMessage(Exception):
    """A message Twilio would drop: ``kind`` (see the module table) and a short ``detail``."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail

    @property
    def twilio_error(self) -> int:
        """The error Twilio reports for it (31950 or 31951)."""
        return TWILIO_ERRORS.get(self.kind, 31951)


def check_message(text: str, stream_sid: str) -> tuple[str, Any]:
    """Validate one text message from the server.

    Returns:
        ``("media", µ-law bytes)``, ``("mark", name)`` or ``("clear", None)``.

    Raises:
        BadMessage: Twilio would drop it (the kind says why).
    """
    try:
        msg = json.loads(text)
    except ValueError:
        raise BadMessage("invalid_json", f"not JSON: {text[:40]!r}") from None
    if not isinstance(msg, dict):
        raise BadMessage("invalid_json", f"top level is a JSON {type(msg).__name__}")
    event = msg.get("event")
    if not isinstance(event, str) or event not in _TOP_FIELDS:
        raise BadMessage(
            "unknown_event", f"event {str(event)[:40]!r}, expected one of media, mark, clear"
        )
    allowed = _TOP_FIELDS[event]
    sid = msg.get("streamSid")
    if sid != stream_sid:
        raise BadMessage(
            "wrong_stream_sid", f"{event!r} with streamSid {str(sid)[:40]!r}, not {stream_sid!r}"
        )
    if not allowed.issuperset(msg):
        extra = sorted(str(k) for k in msg if k not in allowed)
        raise BadMessage("extra_fields", f"{event!r} with {', '.join(extra)}")
    if event == "clear":
        return event, None
    body = msg.get(event)
    if not isinstance(body, dict):
        raise BadMessage("missing_fields", f"{event!r} without a {event!r} object")
    body_allowed = _BODY_FIELDS[event]
    if not body_allowed.issuperset(body):
        extra = sorted(f"{event}.{k}" for k in body if k not in body_allowed)
        raise BadMessage("extra_fields", f"{event!r} with {', '.join(extra)}")
    if event == "mark":
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise BadMessage("invalid_mark", f"mark.name {name!r}, expected a non-empty string")
        return event, name
    payload = body.get("payload")
    if not isinstance(payload, str) or not payload:
        raise BadMessage("invalid_payload", f"media.payload of type {type(payload).__name__}")
    try:
        ulaw = binascii.a2b_base64(payload, strict_mode=True)
    except (binascii.Error, ValueError):
        raise BadMessage("invalid_payload", "media.payload is not strict base64") from None
    return event, ulaw
