"""Twilio request authentication: ``X-Twilio-Signature`` on webhooks and on the media upgrade.

With an auth token set, every webhook and every media-stream upgrade must carry a valid
signature (twilio's ``RequestValidator``), computed over the URL Twilio used: ``PUBLIC_URL``
plus the path and query for webhooks, and the stream URL with no parameters for the upgrade.
Without a token, only loopback clients are served.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

from aiohttp import web
from twilio.request_validator import RequestValidator

from bot.settings import Settings, stream_url


class Authenticator:
    """Checks Twilio signatures and issues per-call stream tokens.

    Args:
        settings: Process settings (auth token and public URL).
    """

    def __init__(self, settings: Settings) -> None:
        secret = settings.twilio_auth_token
        token = secret.get_secret_value() if secret else None
        self._validator = RequestValidator(token) if token else None
        self._public_url = settings.public_url
        # Per-call tokens are HMACs of the call SID; without an auth token the key lives
        # only as long as the process.
        self._token_key = (token or secrets.token_hex(32)).encode()

    @property
    def enforcing(self) -> bool:
        """True when signatures are required (an auth token is set)."""
        return self._validator is not None

    def public_base(self, request: web.Request) -> str:
        """The base URL Twilio reaches us on: ``PUBLIC_URL``, else the request's own."""
        if self._public_url:
            return self._public_url
        return f"{request.scheme}://{request.host}"

    def webhook_url(self, request: web.Request) -> str:
        """The exact URL Twilio requested for a webhook, as it signs it."""
        return self.public_base(request) + request.path_qs

    def check_webhook(self, request: web.Request, params: Mapping[str, str]) -> str | None:
        """None when the webhook may be served, else why it is refused."""
        if self._validator is None:
            return _unauthenticated_refusal(request)
        signature = request.headers.get("X-Twilio-Signature", "")
        if not signature:
            return "missing X-Twilio-Signature"
        if not self._validator.validate(self.webhook_url(request), dict(params), signature):
            return "invalid X-Twilio-Signature"
        return None

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
        url = stream_url(self.public_base(request), request.path)
        parts = urlsplit(url)
        candidates = {url}
        for scheme in ("wss", "ws", "https"):
            candidates.add(urlunsplit((scheme, *parts[1:])))
        if any(self._validator.validate(c, {}, signature) for c in candidates):
            return None
        return "invalid X-Twilio-Signature"

    def call_token(self, call_sid: str) -> str:
        """A per-call token carried as a TwiML ``<Parameter>`` (defence in depth)."""
        return hmac.new(self._token_key, call_sid.encode(), hashlib.sha256).hexdigest()[:32]

    def check_call_token(self, call_sid: str, token: str | None) -> bool:
        """Whether a stream's ``call_token`` parameter matches its call SID."""
        if not self.enforcing:
            return True
        expected = self.call_token(call_sid).encode()
        return bool(token) and hmac.compare_digest(expected, (token or "").encode())


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
    """Whether the peer is on this machine (IPv4-mapped IPv6 loopback included)."""
    remote = (request.remote or "").split("%")[0]
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback
