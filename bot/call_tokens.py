"""Signed, short-lived, single-use call grants: the TwiML's ``call_token`` ``<Parameter>``.

The voice webhook decides everything about a call (persona, caller, called number, custom
parameters) and signs it into a grant bound to the call SID, the stream URL it was issued for
and an expiry. The media socket accepts a grant once: the signature, call SID, URL and expiry
are checked with the signing key alone (so every process sharing ``TWILIO_AUTH_TOKEN``
verifies it), and single use is enforced by a :class:`CallTokenLedger` (in memory, per process,
by default; a shared store can implement the same one-method interface).

Wire form: ``base64url(compact JSON payload) + "." + base64url(HMAC-SHA256(key, payload))``
with the key ``HMAC(auth_token, b"voicebot call-token v1")``, at most 499 characters (Twilio's
``<Parameter>`` value limit): a grant that would not fit is refused when it is issued.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import hmac
import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol
from urllib.parse import urlsplit

TOKEN_VERSION = 1
# Twilio: a <Parameter> value must be under 500 characters.
MAX_TOKEN_CHARS = 499
# Each custom value the webhook signs is cut to this many characters.
MAX_CUSTOM_VALUE_CHARS = 100
# From and To are cut to this many: longer is no phone number (E.164 has at most 16).
MAX_NUMBER_CHARS = 32
DEFAULT_TTL_SECS = 300.0
_KEY_LABEL = b"voicebot call-token v1"
_SIG_BYTES = 32


class CallTokenError(ValueError):
    """A ``call_token`` that does not authorise this stream; the message is the close reason."""


class CallTokenExpired(CallTokenError):
    """A genuine grant used after its expiry."""


class CallTokenReplay(CallTokenError):
    """A genuine grant presented a second time."""


class CallTokenTooLong(ValueError):
    """A grant that would not fit in a TwiML ``<Parameter>`` (raised when issuing)."""


@dataclass(frozen=True)
class CallGrant:
    """What the webhook decided for one call.

    Attributes:
        call_sid: The call it was issued for.
        stream_url: The media-stream URL it was issued for.
        expires_at: Unix time (seconds) after which it is refused.
        nonce: Random; the ledger key for single use ("" for an unsigned dev-mode start).
        persona: The persona id.
        caller: Twilio ``From`` as the webhook received it (capped).
        called: Twilio ``To`` (capped).
        custom: Custom template parameters (``${custom.X}``).
        peer: The peer URL of the process that admitted the call at its webhook and keeps it
            (``VOICEBOT_PEER_URL``; ``bot.peers``); "" when the issuer named none.
    """

    call_sid: str
    stream_url: str
    expires_at: float
    nonce: str
    persona: str
    caller: str
    called: str
    custom: Mapping[str, str] = field(default_factory=dict)
    peer: str = ""

    def differs_from(self, params: Mapping[str, str]) -> list[str]:
        """Names of ``start`` custom parameters that differ from (or are not in) this grant."""
        signed: dict[str, str] = {
            **self.custom,
            "persona": self.persona,
            "from": self.caller,
            "to": self.called,
        }
        return sorted(k for k, v in params.items() if k != "call_token" and signed.get(k) != v)


class CallTokenLedger(Protocol):
    """Remembers consumed grants until they expire."""

    def consume(self, nonce: str, expires_at: float) -> bool:
        """Record ``nonce`` as used; False if it was already used (a replay)."""
        ...


class LedgerFull(CallTokenError):
    """The ledger holds its maximum of unexpired grants: refuse rather than forget one."""


class MemoryLedger:
    """A per-process :class:`CallTokenLedger`: nonce -> expiry, pruned as entries expire.

    Args:
        max_entries: Unexpired grants remembered at most; beyond it new grants are refused
            (:class:`LedgerFull`) so a replay is never let through by forgetting.
        clock: Unix time source (tests inject one).
    """

    def __init__(self, max_entries: int = 100_000, clock: Callable[[], float] = time.time):
        self._max = max_entries
        self._clock = clock
        self._seen: dict[str, float] = {}
        self._expiries: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._seen)

    def consume(self, nonce: str, expires_at: float) -> bool:
        """Record ``nonce`` as used; False if it was already used (a replay).

        Raises:
            LedgerFull: ``max_entries`` unexpired grants are held already.
        """
        self._prune()
        if nonce in self._seen:
            return False
        if len(self._seen) >= self._max:
            raise LedgerFull(f"call token ledger full ({self._max} unexpired grants)")
        self._seen[nonce] = expires_at
        heapq.heappush(self._expiries, (expires_at, nonce))
        return True

    def _prune(self) -> None:
        now = self._clock()
        while self._expiries and self._expiries[0][0] < now:
            _, nonce = heapq.heappop(self._expiries)
            self._seen.pop(nonce, None)


def stream_key(url: str) -> str:
    """A stream URL as compared: host and path; ``ws``/``wss``/``http(s)`` are the same."""
    parts = urlsplit(url)
    return f"{parts.netloc.lower()}{parts.path.rstrip('/')}"


def derive_key(auth_token: str | None) -> bytes:
    """The signing key: derived from the Twilio auth token, else random for this process."""
    if not auth_token:
        return secrets.token_bytes(32)
    return hmac.new(auth_token.encode(), _KEY_LABEL, hashlib.sha256).digest()


class CallTokenCodec:
    """Issues and verifies signed call grants.

    Args:
        key: The signing key (:func:`derive_key`).
        ttl_secs: How long a grant is valid after it is issued.
        clock: Unix time source (tests inject one).
    """

    def __init__(
        self,
        key: bytes,
        ttl_secs: float = DEFAULT_TTL_SECS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = key
        self._ttl = ttl_secs
        self._clock = clock

    def issue(
        self,
        *,
        call_sid: str,
        stream_url: str,
        persona: str,
        caller: str,
        called: str,
        custom: Mapping[str, str] | None = None,
        peer: str = "",
    ) -> str:
        """A signed grant for one call, as the ``call_token`` parameter value.

        ``peer`` names the process that admitted the call (its peer URL); a process that
        receives the stream elsewhere forwards it there (``bot.stream_forward``).

        Raises:
            CallTokenTooLong: the grant would exceed ``MAX_TOKEN_CHARS`` (shorten the persona
                id, the custom parameters or the public URL).
        """
        payload = {
            "v": TOKEN_VERSION,
            "c": call_sid,
            "u": stream_url,
            "e": round((self._clock() + self._ttl) * 1000),
            "n": secrets.token_urlsafe(12),
            "p": persona,
            "f": caller[:MAX_NUMBER_CHARS],
            "t": called[:MAX_NUMBER_CHARS],
            "x": {k: v[:MAX_CUSTOM_VALUE_CHARS] for k, v in (custom or {}).items()},
        }
        if peer:
            payload["o"] = peer
        body = _b64(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode())
        token = f"{body}.{_b64(self._sign(body))}"
        if len(token) > MAX_TOKEN_CHARS:
            raise CallTokenTooLong(
                f"call {call_sid}: call_token would be {len(token)} characters, expected at "
                f"most {MAX_TOKEN_CHARS} (Twilio's <Parameter> value limit); shorten the "
                "persona id, the custom parameters on the webhook URL, PUBLIC_URL or "
                "VOICEBOT_PEER_URL"
            )
        return token

    def verify(self, token: str, *, call_sid: str, stream_url: str) -> CallGrant:
        """The grant ``token`` carries, if it authorises this stream.

        Raises:
            CallTokenExpired: genuine but past its expiry.
            CallTokenError: forged, tampered, malformed, or for another call or URL.
        """
        if not token or len(token) > MAX_TOKEN_CHARS or not token.isascii():
            raise CallTokenError("invalid call_token")
        body, _, sig = token.partition(".")
        try:
            signature = _unb64(sig)
        except ValueError:
            raise CallTokenError("invalid call_token") from None
        # Canonical form only: base64 decoders ignore stray characters and unused low bits.
        canonical = len(signature) == _SIG_BYTES and _b64(signature) == sig
        if not canonical or not hmac.compare_digest(signature, self._sign(body)):
            raise CallTokenError("invalid call_token")
        try:
            grant = _grant(json.loads(_unb64(body)))
        except (ValueError, TypeError, KeyError):
            # Signed by our key but not our format: a key shared with something else.
            raise CallTokenError("invalid call_token: unknown format") from None
        if grant.call_sid != call_sid:
            raise CallTokenError("call_token was issued for another call")
        if stream_key(grant.stream_url) != stream_key(stream_url):
            raise CallTokenError("call_token was issued for another stream URL")
        if self._clock() > grant.expires_at:
            raise CallTokenExpired("call token expired")
        return grant

    def _sign(self, body: str) -> bytes:
        return hmac.new(self._key, body.encode(), hashlib.sha256).digest()


def _grant(data: Any) -> CallGrant:
    if not isinstance(data, dict) or data.get("v") != TOKEN_VERSION:
        raise ValueError("not a version-1 grant")
    strings = [data[k] for k in ("c", "u", "n", "p", "f", "t")]
    custom = data["x"]
    if not all(isinstance(s, str) for s in strings) or not isinstance(data["e"], int):
        raise TypeError("grant fields have the wrong types")
    if not isinstance(custom, dict) or not all(isinstance(v, str) for v in custom.values()):
        raise TypeError("grant custom parameters are not strings")
    call_sid, url, nonce, persona, caller, called = strings
    peer = data.get("o", "")
    if not isinstance(peer, str):
        raise TypeError("grant peer is not a string")
    return CallGrant(
        call_sid=call_sid,
        stream_url=url,
        expires_at=data["e"] / 1000,
        nonce=nonce,
        persona=persona,
        caller=caller,
        called=called,
        custom=MappingProxyType(dict(custom)),
        peer=peer,
    )


def unverified_peer(token: str) -> str:
    """The peer a token names, read WITHOUT checking its signature ("" if none or unreadable).

    Only for loopback development without ``TWILIO_AUTH_TOKEN``, where each process signs with
    its own random key and cannot verify another's grants (``bot.peers``); never trust it
    beyond that.
    """
    body = token.partition(".")[0]
    try:
        data = json.loads(_unb64(body))
    except ValueError:
        return ""
    peer = data.get("o", "") if isinstance(data, dict) else ""
    return peer if isinstance(peer, str) else ""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"not base64url: {e}") from None
