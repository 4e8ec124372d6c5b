"""Signing a webhook body, and checking it on the receiving side (Stripe's scheme).

``X-Voicebot-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``: the
timestamp is signed with the body, so a receiver can refuse an old body replayed later
(``verify``'s ``tolerance_secs``). Used by the post-call webhook (``bot.post_call``).
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Voicebot-Signature"
SIGNATURE_TOLERANCE_SECS = 300


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    """The ``X-Voicebot-Signature`` value: ``t=<timestamp>,v1=<hex HMAC-SHA256("<t>.<body>")>``."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(
    secret: bytes,
    body: bytes,
    header: str,
    *,
    tolerance_secs: float = SIGNATURE_TOLERANCE_SECS,
    now: float | None = None,
) -> bool:
    """Whether ``header`` is a valid, fresh signature of ``body`` (the receiver's check).

    Args:
        secret: The shared secret.
        body: The request body exactly as received (bytes, before any JSON parsing).
        header: The ``X-Voicebot-Signature`` value.
        tolerance_secs: How old (or how far ahead) ``t`` may be; refuses replays of old bodies.
        now: The current Unix time (default: ``time.time()``).
    """
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if sep:
            parts.setdefault(key, []).append(value)
    try:
        timestamp = int(parts["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_secs:
        return False
    expected = sign(secret, body, timestamp).partition(",v1=")[2]
    return any(hmac.compare_digest(expected, v) for v in parts.get("v1", []))
