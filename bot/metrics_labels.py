"""The bounded label values of the call metrics (``bot.metrics``): end reasons, refusal causes.

A Prometheus label with unbounded values (a call SID, a number, free text) makes a series per
value, so every label ``bot.metrics`` sets comes from a fixed set here: ``END_REASONS`` (a call's
free-text end reason mapped by ``end_reason_label``), ``REFUSAL_CAUSES``, WebSocket close codes
(``close_code_label``) and bad-input kinds (``bad_input_label``); anything else is ``other``.
"""

from __future__ import annotations

import re

END_REASONS = (
    "caller_hung_up",  # the caller hung up (Twilio `stop` or the socket closed normally)
    "bot_ended",  # the model's end_call tool
    "transferred",  # transfer_call redirected the call
    "transfer_failed",
    "max_duration",  # the persona's max_call_secs
    "caller_idle",  # idle re-prompts ran out
    "model_unresponsive",  # the watchdog gave up after its apology
    "model_failed",  # the Live API refused or lost the session for good
    "media_timeout",  # Twilio stopped sending media
    "stream_closed",  # the media socket closed abnormally
    "shutdown",  # wrapped up or cut by a drain
    "internal_error",
    "other",
)
# ``bot.calls.CallRegistry`` refusal causes, plus the HTTP refusals of Twilio-facing requests.
REFUSAL_CAUSES = (
    "capacity",  # VOICEBOT_MAX_CALLS
    "draining",
    "quota",  # the Gemini session quota
    "lag_guard",  # the event loop is lagging (VOICEBOT_LAG_GUARD_MS)
    "unreserved_stream",  # a stream whose TwiML this process did not serve
    "stream_refused",  # a stream at capacity or past the drain window
    "duplicate_stream",
    "call_token",  # a bad, expired or replayed call token at the stream's start
    "forbidden",  # 403 on a webhook or media upgrade (signature, peer)
    "too_large",  # 413: a webhook body over the limit
    "too_slow",  # 408: a webhook body not sent in time
)
_KIND = re.compile(r"[a-z_]{1,32}")  # bad-input kinds are code's identifiers
_KNOWN_CLOSE_CODES = frozenset({1000, 1001, 1006, 1007, 1008, 1009, 1011, 1012, 1013, 1014})


def close_code_label(code: int | None) -> str:
    """A WebSocket close code as a bounded label: the code, ``none`` or ``other``."""
    if code is None:
        return "none"
    return str(code) if code in _KNOWN_CLOSE_CODES else "other"


def end_reason_label(reason: str | None) -> str:
    """A call's end reason (free text, ``CallRecord.end_reason``) as one of ``END_REASONS``."""
    r = (reason or "").lower()
    table = (
        ("caller hung up", "caller_hung_up"),
        ("end_call", "bot_ended"),
        ("transfer failed", "transfer_failed"),
        ("transfer", "transferred"),
        ("max call duration", "max_duration"),
        ("idle", "caller_idle"),
        ("model unresponsive", "model_unresponsive"),
        ("live api", "model_failed"),
        ("no media", "media_timeout"),
        ("stream closed", "stream_closed"),
        ("shutting down", "shutdown"),
        ("cancelled", "shutdown"),
        ("internal error", "internal_error"),
    )
    for needle, label in table:
        if needle in r:
            return label
    return "other"


def refusal_label(cause: str) -> str:
    """A refusal cause as a bounded label: one of ``REFUSAL_CAUSES`` or ``other``."""
    return cause if cause in REFUSAL_CAUSES else "other"


def bad_input_label(kind: str) -> str:
    """A bad-input kind as a bounded label: a short lower-case identifier or ``other``."""
    return kind if _KIND.fullmatch(kind) else "other"
