"""Wire helpers: endpoint path, base64 audio, MIME rates, close reasons, server messages.

Server messages are pre-encoded as UTF-8 JSON so the hot path only writes bytes.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from functools import lru_cache
from typing import Any

OUTPUT_RATE_HZ = 24_000
OUTPUT_MIME = f"audio/pcm;rate={OUTPUT_RATE_HZ}"
DEFAULT_INPUT_RATE_HZ = 16_000
# Audio is billed at 32 tokens a second; text at about 4 characters a token.
AUDIO_TOKENS_PER_SEC = 32

PATH_RE = re.compile(
    r"/ws/google\.ai\.generativelanguage\.(?P<version>v1|v1beta|v1alpha)\."
    r"GenerativeService\.BidiGenerateContent(?P<constrained>Constrained)?$"
)
_SLASHES = re.compile(r"/{2,}")
_URLSAFE = bytes.maketrans(b"-_", b"+/")

SESSION_NOT_FOUND = "BidiGenerateContent session not found"
DEADLINE_EXPIRED = "Deadline expired before operation could complete."
QUOTA_EXCEEDED = "You exceeded your current quota, please check your plan and billing details."
UNAVAILABLE = "The service is currently unavailable."
MISSING_KEY = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)
BAD_KEY = "API key not valid. Please pass a valid API key."


def match_path(path: str) -> str | None:
    """The API version named by a BidiGenerateContent path (repeated slashes collapsed)."""
    found = PATH_RE.search(_SLASHES.sub("/", path))
    return found.group("version") if found else None


def close_reason(reason: str) -> bytes:
    """A close reason cut to the 123-byte control-frame limit without splitting a character."""
    return reason.encode()[:123].decode("utf-8", errors="ignore").encode()


def b64decode(data: str) -> bytes:
    """Decode standard or URL-safe base64 (the SDK sends URL-safe)."""
    raw = data.encode("ascii") if isinstance(data, str) else bytes(data)
    raw = raw.translate(_URLSAFE)
    try:
        return base64.b64decode(raw + b"=" * (-len(raw) % 4), validate=False)
    except binascii.Error as exc:
        raise ValueError(f"audio data is not base64: {exc}") from exc


@lru_cache(maxsize=64)
def mime_rate(mime: str) -> int:
    """``audio/pcm;rate=8000`` -> 8000 (16 kHz when no rate is named)."""
    found = re.search(r"rate=(\d+)", mime or "")
    return int(found.group(1)) if found else DEFAULT_INPUT_RATE_HZ


def get(obj: dict[str, Any], snake_name: str, camel_name: str) -> Any:
    """A field by either casing."""
    value = obj.get(snake_name)
    return obj.get(camel_name) if value is None else value


def encode(message: dict[str, Any]) -> bytes:
    """A server message as compact UTF-8 JSON."""
    return json.dumps(message, separators=(",", ":")).encode()


SETUP_COMPLETE = encode({"setupComplete": {}})
GENERATION_COMPLETE = encode({"serverContent": {"generationComplete": True}})
INTERRUPTED = encode({"serverContent": {"interrupted": True}})


_CHUNK_HEAD = b'{"serverContent":{"modelTurn":{"parts":['
_CHUNK_TAIL = b"]}}}"


def audio_chunk(pcm: bytes) -> bytes:
    """One ``modelTurn`` message carrying 24 kHz PCM16 in one part (the 2.5 shape)."""
    data = base64.b64encode(pcm).decode("ascii")
    return encode(
        {
            "serverContent": {
                "modelTurn": {"parts": [{"inlineData": {"mimeType": OUTPUT_MIME, "data": data}}]}
            }
        }
    )


def chunk_part(chunk: bytes) -> bytes:
    """The encoded part (``{"inlineData":…}``) of a message made by `audio_chunk`."""
    if not (chunk.startswith(_CHUNK_HEAD) and chunk.endswith(_CHUNK_TAIL)):
        raise ValueError("expected a one-part modelTurn message made by audio_chunk")
    return chunk[len(_CHUNK_HEAD) : -len(_CHUNK_TAIL)]


def transcription(kind: str, text: str) -> bytes:
    """``inputTranscription`` or ``outputTranscription``."""
    return encode({"serverContent": {kind: {"text": text}}})


def usage(prompt_audio_secs: float, prompt_text_tokens: int, reply_secs: float) -> dict[str, Any]:
    """A ``usageMetadata`` body: the prompt so far and the reply's audio tokens."""
    audio_in = int(prompt_audio_secs * AUDIO_TOKENS_PER_SEC)
    prompt = audio_in + prompt_text_tokens
    response = int(reply_secs * AUDIO_TOKENS_PER_SEC)
    return {
        "promptTokenCount": prompt,
        "responseTokenCount": response,
        "totalTokenCount": prompt + response,
        "promptTokensDetails": [
            {"modality": "AUDIO", "tokenCount": audio_in},
            {"modality": "TEXT", "tokenCount": prompt_text_tokens},
        ],
        "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": response}],
    }


TURN_COMPLETE_FIELDS: dict[str, Any] = {
    "turnComplete": True,
    "turnCompleteReason": "NEED_MORE_INPUT",
    "waitingForInput": True,
}


def turn_complete(prompt_audio_secs: float, prompt_text_tokens: int, reply_secs: float) -> bytes:
    """``turnComplete`` with ``usageMetadata`` in the same message (Pipecat reads it there)."""
    return encode(
        {
            "serverContent": dict(TURN_COMPLETE_FIELDS),
            "usageMetadata": usage(prompt_audio_secs, prompt_text_tokens, reply_secs),
        }
    )


def usage_only(body: dict[str, Any]) -> bytes:
    """A message with nothing but ``usageMetadata`` (3.x sends these)."""
    return encode({"usageMetadata": body})


def server_content(
    parts: list[bytes],
    fields: dict[str, Any],
    usage_body: dict[str, Any] | None = None,
) -> bytes:
    """One ``serverContent`` message: encoded audio parts (`chunk_part`) plus other fields.

    The parts are spliced in as encoded, so a bundled message costs no base64 work.
    """
    body = encode(fields)[1:-1] if fields else b""
    items = []
    if parts:
        items.append(b'"modelTurn":{"parts":[' + b",".join(parts) + b"]}")
    if body:
        items.append(body)
    out = b'{"serverContent":{' + b",".join(items) + b"}"
    if usage_body is not None:
        out += b',"usageMetadata":' + encode(usage_body)
    return out + b"}"


def resumption_update(handle: str | None) -> bytes:
    """``sessionResumptionUpdate``: resumable with a handle when idle, else not resumable."""
    if handle:
        return encode({"sessionResumptionUpdate": {"newHandle": handle, "resumable": True}})
    return encode({"sessionResumptionUpdate": {"resumable": False}})


def go_away(time_left_secs: float) -> bytes:
    """``goAway`` with a Duration string."""
    return encode({"goAway": {"timeLeft": f"{time_left_secs:g}s"}})


def tool_call(call_id: str, name: str, args: dict[str, Any]) -> bytes:
    """``toolCall`` with one function call."""
    return encode({"toolCall": {"functionCalls": [{"id": call_id, "name": name, "args": args}]}})


def redact(value: Any) -> Any:
    """A client message for the record: every ``data`` string replaced by its byte length."""
    if isinstance(value, dict):
        return {
            k: (f"<{len(v) * 3 // 4 - v.count('=')} bytes>" if k == "data" and isinstance(v, str)
                else redact(v))
            for k, v in value.items()
        }  # fmt: skip
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value
