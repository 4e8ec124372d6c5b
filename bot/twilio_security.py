"""Twilio request authentication: ``X-Twilio-Signature`` on webhooks and on the media upgrade.

With an auth token set, every webhook and every media-stream upgrade must carry a valid
signature (twilio's ``RequestValidator``), computed over the URL Twilio used: ``PUBLIC_URL``
plus the path and query for webhooks, and the stream URL with no parameters for the upgrade.
Without a token, only loopback clients are served.

Each call's stream is then authorised by the signed, single-use ``call_token`` the voice
webhook put in the TwiML (``bot.call_tokens``): :meth:`Authenticator.authorise_start` checks it
and returns what the webhook decided (persona, caller, called, custom parameters).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

from aiohttp import web
from twilio.request_validator import RequestValidator

from bot.call_tokens import (
    CallGrant,
    CallTokenCodec,
    CallTokenError,
    CallTokenLedger,
    CallTokenReplay,
    MemoryLedger,
    derive_key,
    unverified_peer,
)
from bot.listen_address import is_loopback_host
from bot.settings import Settings, stream_url

# ``start`` custom parameters that are not template values.
_CALL_FIELDS = ("persona", "from", "to", "call_token")


class Authenticator:
    """Checks Twilio signatures and issues and checks per-call grants (``call_token``).

    Args:
        settings: Process settings (auth token, public URL, call-token lifetime).
        ledger: Where consumed grants are remembered; default: this process's memory.
    """

    def __init__(self, settings: Settings, ledger: CallTokenLedger | None = None) -> None:
        secret = settings.twilio_auth_token
        token = secret.get_secret_value() if secret else None
        self._validator = RequestValidator(token) if token else None
        self._public_url = settings.public_url
        # Keyed by the auth token, every process of a deployment verifies every grant; without
        # one the key lives only as long as the process.
        self._codec = CallTokenCodec(derive_key(token), settings.call_token_ttl_secs)
        self._ledger: CallTokenLedger = ledger if ledger is not None else MemoryLedger()
        # Signed into every grant: streams landing on another process are relayed here
        # (bot.peers); `voicebot serve` sets its loopback listen address when none is given.
        self.peer_url: str = settings.peer_url or ""

    @property
    def enforcing(self) -> bool:
        """True when signatures are required (an auth token is set)."""
        return self._validator is not None

    def public_base(self, request: web.Request) -> str:
        """The base URL Twilio reaches us on: ``PUBLIC_URL``, else the request's own."""
        if self._public_url:
            return self._public_url
        host = request.host
        try:  # a Host header such as '[' or 'h:x' is no URL authority (400, not a traceback)
            parts = urlsplit(f"//{host}")
            _ = parts.port
        except ValueError:
            raise web.HTTPBadRequest(text="Bad request: the Host header is malformed\n") from None
        if not parts.hostname:
            raise web.HTTPBadRequest(text="Bad request: the Host header is malformed\n")
        return f"{request.scheme}://{host}"

    def webhook_url(self, request: web.Request) -> str:
        """The exact URL Twilio requested for a webhook, as it signs it (query bytes as sent)."""
        return self.public_base(request) + request.raw_path

    def check_webhook(self, request: web.Request, params: Mapping[str, str]) -> str | None:
        """None when the webhook may be served, else why it is refused."""
        if self._validator is None:
            return _unauthenticated_refusal(request)
        signature = request.headers.get("X-Twilio-Signature", "")
        if not signature:
            return "missing X-Twilio-Signature"
        if not self._signed(self.webhook_url(request), dict(params), signature):
            return "invalid X-Twilio-Signature"
        return None

    def _signed(self, url: str, params: dict[str, str], signature: str) -> bool:
        """Whether ``signature`` signs ``url`` + ``params``; a URL urllib cannot parse is not."""
        assert self._validator is not None
        try:
            return bool(self._validator.validate(url, params, signature))
        except ValueError:  # urllib inside the validator (a malformed path or authority)
            return False

    def check_upgrade(self, request: web.Request) -> str | None:
        """None when the media upgrade may proceed, else why it is refused.

        Twilio signs the upgrade over the stream URL with no parameters; behind a TLS proxy
        the same URL may be seen as ``https``, so the ``wss``/``ws``/``https`` forms are tried.
        """
        if self._validator is None:
            return _unauthenticated_refusal(request)
        signature = request.headers.get("X-Twilio-Signature", "")
        if not signature:
            return "missing X-Twilio-Signature"
        url = self.upgrade_url(request)
        parts = urlsplit(url)
        candidates = {url}
        for scheme in ("wss", "ws", "https"):
            candidates.add(urlunsplit((scheme, *parts[1:])))
        if any(self._signed(c, {}, signature) for c in candidates):
            return None
        return "invalid X-Twilio-Signature"

    def upgrade_url(self, request: web.Request) -> str:
        """The stream URL a media upgrade was made to, as the webhook wrote it in the TwiML."""
        return stream_url(self.public_base(request), request.path)

    def issue_call_token(
        self,
        *,
        call_sid: str,
        stream_url: str,
        persona: str,
        caller: str,
        called: str,
        custom: Mapping[str, str],
    ) -> str:
        """The signed grant for a call's TwiML ``call_token`` ``<Parameter>``.

        Raises:
            CallTokenTooLong: it would not fit in a ``<Parameter>`` value.
        """
        return self._codec.issue(
            call_sid=call_sid, stream_url=stream_url, persona=persona,
            caller=caller, called=called, custom=custom, peer=self.peer_url,
        )  # fmt: skip

    def stream_owner(
        self, request: web.Request, call_sid: str, params: Mapping[str, str]
    ) -> tuple[str, bool]:
        """``(peer URL, verified)``: which process a ``start``'s token says keeps the call.

        Nothing is used up (the owner's :meth:`authorise_start` does that). A token that does
        not verify names no peer when signatures are enforced (it is refused here with its
        reason); in loopback development, where each process has its own key, the peer it
        names is returned unverified (``bot.peers.PeerRouter`` dials only loopback then).
        """
        token = params.get("call_token")
        if not token:
            return "", False
        try:
            grant = self._codec.verify(
                token, call_sid=call_sid, stream_url=self.upgrade_url(request)
            )
        except CallTokenError:
            return ("", False) if self.enforcing else (unverified_peer(token), False)
        return grant.peer, True

    def authorise_start(
        self, request: web.Request, call_sid: str, params: Mapping[str, str]
    ) -> CallGrant:
        """What the webhook decided for this stream, from its ``call_token``, used up once.

        With signatures enforced the token is required and is the only source of persona,
        caller, called number and custom parameters; a ``start`` whose parameters say otherwise
        is refused. Without an auth token (loopback dev mode) a token present is checked the
        same way, and a ``start`` without one is taken at its word.

        Args:
            request: The media upgrade (its URL must be the one the grant was issued for).
            call_sid: ``start.callSid``.
            params: ``start.customParameters``.

        Raises:
            CallTokenError: refused; the message is the close reason (no caller data in it).
                ``CallTokenExpired`` and ``CallTokenReplay`` for those two cases.
        """
        token = params.get("call_token")
        if not token:
            if self.enforcing:
                raise CallTokenError("missing call_token parameter")
            return CallGrant(
                call_sid=call_sid,
                stream_url=self.upgrade_url(request),
                expires_at=math.inf,
                nonce="",
                persona=params.get("persona", ""),
                caller=params.get("from", ""),
                called=params.get("to", ""),
                custom={k: v for k, v in params.items() if k not in _CALL_FIELDS},
            )
        grant = self._codec.verify(token, call_sid=call_sid, stream_url=self.upgrade_url(request))
        differing = grant.differs_from(params)
        if differing:
            known = [k for k in differing if k in _CALL_FIELDS or k in grant.custom]
            unsigned = len(differing) - len(known)
            what = ", ".join([*known, *([f"{unsigned} unsigned"] if unsigned else [])])
            raise CallTokenError(f"parameters differ from the signed call ({what})")
        if not self._ledger.consume(grant.nonce, grant.expires_at):
            raise CallTokenReplay("call token replay: this call_token was already used")
        return grant


_LOOPBACK_ONLY = "no TWILIO_AUTH_TOKEN is set, so only loopback clients are served"
_PROXIED = (
    "no TWILIO_AUTH_TOKEN is set, and this request came through a proxy or tunnel; set "
    "TWILIO_AUTH_TOKEN (and PUBLIC_URL) to serve Twilio"
)
# Headers that reverse proxies and tunnels (nginx, ngrok, cloudflared, load balancers) add:
# a request carrying one comes from elsewhere even when its TCP peer is loopback.
_PROXY_HEADERS = (
    "Forwarded",
    "X-Forwarded-For",
    "X-Forwarded-Host",
    "X-Real-IP",
    "CF-Connecting-IP",
)


def _unauthenticated_refusal(request: web.Request) -> str | None:
    if not is_loopback(request):
        return _LOOPBACK_ONLY
    if any(name in request.headers for name in _PROXY_HEADERS):
        return _PROXIED
    return None


def is_loopback(request: web.Request) -> bool:
    """Whether the TCP peer is on this machine (IPv4-mapped IPv6 loopback included)."""
    remote = request.remote or ""
    return remote.lower() != "localhost" and is_loopback_host(remote)
