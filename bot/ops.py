"""The operations listener: ``/stats`` (and later metrics, the calls page) off the public port.

Twilio must reach the public listener (webhooks, media streams); nobody outside should reach
what an operator reads. So operations endpoints are served by a second aiohttp
``Application`` on its own ``AppRunner`` and port (``VOICEBOT_OPS_PORT`` / ``--ops-port``,
default ``127.0.0.1:9464``), never by the public one, where ``/stats`` is simply not routed
(404 by construction, not by a check that a later route could forget). Health (``/livez``,
``/readyz``, ``/healthz``) is served on both: kubelet probes reach the pod's public port.

Why a second Application rather than two ``TCPSite``s on one runner: one runner serves one
router and one middleware chain on every site, so telling the ports apart would take a
per-request look at the socket in every handler or middleware. A second Application gets its
own router and its own bearer-token middleware, and shares the public app's objects by
reference (``PUBLIC_APP``; the call registry and the VAD detector under the same keys), on the
same event loop: nothing is copied, nothing can disagree. Its runner is started after the
public app's startup (so the shared objects exist) and cleaned up after it (``/stats`` stays
readable through a drain).

``VOICEBOT_OPS_TOKEN``, when set, is required on every ops request (``Authorization: Bearer``,
compared in constant time; otherwise 401 with ``WWW-Authenticate``). A listener on a
non-loopback address without a token refuses to start (``check_ops_exposure``, in
``bot.listen_address`` so that ``voicebot serve`` refuses before importing Pipecat).

The calls page (``bot.calls_page``) is opened in a browser, which cannot add a header: opening
``/?token=<token>`` (or ``/calls?token=``) once answers 303 to the bare page with an HttpOnly,
``SameSite=Strict`` cookie holding an HMAC of the token (not the token), and that cookie
then stands for the header on GET and HEAD requests only (a cookie never authorises
``POST /stats/reset``). A wrong ``?token=`` is refused like a wrong header.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from loguru import logger

from bot.app_keys import CALLS, FORWARDER, RECORDS, VAD_MODEL, WARM_SESSIONS
from bot.calls_page.routes import PAGE_PATHS, add_calls_page_routes
from bot.health import add_health_routes
from bot.listen_address import ListenAddress
from bot.metrics import METRICS, add_metrics_route
from bot.outbound.http_api import add_outbound_api
from bot.settings import Settings
from bot.stats import add_stats_routes

PUBLIC_APP: web.AppKey[web.Application] = web.AppKey("public_app", web.Application)
OPS_AUTH: web.AppKey[OpsAuth] = web.AppKey("ops_auth")
REALM = "voicebot-ops"
# Refusals are logged at most once per window (a scanner must not flood the log); the next
# line says how many were refused in between.
REFUSAL_LOG_WINDOW_SECS = 10.0
# The calls page's cookie (see the module docstring) and the methods it may authorise.
PAGE_COOKIE = "voicebot_ops"
COOKIE_METHODS = ("GET", "HEAD")


class OpsAuth:
    """Bearer-token check for the operations listener, with rate-limited refusal logs.

    Args:
        token: The required token; None: no token is required (a loopback-only listener).
        log_window_secs: At most one refusal line per this many seconds.
        clock: Monotonic seconds (tests pass a fake).
    """

    def __init__(
        self,
        token: str | None,
        log_window_secs: float = REFUSAL_LOG_WINDOW_SECS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._expected = f"Bearer {token}".encode() if token else None
        self._token = token.encode() if token else None
        self.cookie = (
            hmac.new(token.encode(), b"voicebot ops calls page", hashlib.sha256).hexdigest()
            if token
            else None
        )
        self._window = log_window_secs
        self._clock = clock
        self._last_logged: float | None = None
        self._unlogged = 0
        self.refused = 0

    @property
    def required(self) -> bool:
        """Whether requests must carry the token."""
        return self._expected is not None

    def refusal(self, request: web.Request) -> str | None:
        """Why ``request`` is refused (no or wrong bearer token), or None when it may pass."""
        if self._expected is None:
            return None
        got = request.headers.get("Authorization", "")
        if not got and self._cookie_ok(request):
            return None
        if not got:
            return "no Authorization header"
        if not got.startswith("Bearer "):
            return "Authorization is not a Bearer token"
        # Constant time over the whole header: the token's length and prefix are not leaked
        # by how long a wrong guess takes to refuse.
        if not hmac.compare_digest(got.encode(), self._expected):
            return "wrong bearer token"
        return None

    def _cookie_ok(self, request: web.Request) -> bool:
        got = request.cookies.get(PAGE_COOKIE)
        return (
            self.cookie is not None
            and got is not None
            and request.method in COOKIE_METHODS
            and hmac.compare_digest(got.encode(), self.cookie.encode())
        )

    def page_login(self, request: web.Request) -> web.StreamResponse | None:
        """``GET /?token=…``: a 303 to the bare page that sets the page cookie; None: not one.

        Raises:
            HTTPUnauthorized: the ``token`` is wrong (counted and logged like a bad header).
        """
        if (
            self._token is None
            or self.cookie is None
            or request.method != "GET"
            or request.path not in PAGE_PATHS
            or "token" not in request.query
        ):
            return None
        if not hmac.compare_digest(request.query["token"].encode(), self._token):
            self.note_refusal(request, "wrong ?token= for the calls page")
            raise _unauthorized()
        # A fixed path, never one taken from the request (no open redirect).
        response = web.Response(
            status=303, headers={"Location": request.path, "Cache-Control": "no-store"}
        )
        response.set_cookie(PAGE_COOKIE, self.cookie, httponly=True, samesite="Strict", path="/")
        return response

    def note_refusal(self, request: web.Request, reason: str) -> None:
        """Count a refusal and log it (one WARNING line per window; never the header value)."""
        self.refused += 1
        now = self._clock()
        if self._last_logged is not None and now - self._last_logged < self._window:
            self._unlogged += 1
            return
        more = f" ({self._unlogged} more refused since the last line)" if self._unlogged else ""
        logger.warning(
            f"ops listener: refused {request.method} {request.path} from {request.remote}: "
            f"{reason}; expected 'Authorization: Bearer <VOICEBOT_OPS_TOKEN>'{more}"
        )
        self._last_logged = now
        self._unlogged = 0


@web.middleware
async def require_token(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Middleware of an operations app: its ``OPS_AUTH`` bearer token, or 401."""
    auth = request.app[OPS_AUTH]
    login = auth.page_login(request)
    if login is not None:
        return login
    reason = auth.refusal(request)
    if reason is not None:
        auth.note_refusal(request, reason)
        raise _unauthorized()
    return await handler(request)


def _unauthorized() -> web.HTTPUnauthorized:
    return web.HTTPUnauthorized(
        text="401: this operations endpoint requires 'Authorization: Bearer <token>' "
        "(VOICEBOT_OPS_TOKEN); a browser opens the calls page once as /?token=<token>\n",
        headers={"WWW-Authenticate": f'Bearer realm="{REALM}"'},
    )


def create_ops_app(public: web.Application, settings: Settings) -> web.Application:
    """The operations Application, sharing ``public``'s call registry and VAD detector.

    Routes: ``GET /stats``, ``POST /stats/reset``, ``GET /metrics`` (Prometheus, the public
    app's registry), ``/livez``, ``/readyz``, ``/healthz``, and the calls page (``/``,
    ``/calls``, ``/static/…``, ``/api/calls…``; ``bot.calls_page``).
    """
    ops = web.Application(middlewares=[require_token])
    token = settings.ops_token.get_secret_value() if settings.ops_token else None
    ops[OPS_AUTH] = OpsAuth(token)
    ops[PUBLIC_APP] = public
    ops[CALLS] = public[CALLS]
    ops[VAD_MODEL] = public[VAD_MODEL]
    add_health_routes(ops)
    add_stats_routes(ops, lambda: len(public[CALLS]), reset_needs_loopback=token is None)
    ops[METRICS] = public[METRICS]
    if FORWARDER in public:  # relays to other processes, for /stats
        ops[FORWARDER] = public[FORWARDER]
    if WARM_SESSIONS in public:  # pre-warming outcomes, for /stats
        ops[WARM_SESSIONS] = public[WARM_SESSIONS]
    add_metrics_route(ops, public[METRICS])
    add_calls_page_routes(ops, public[CALLS], public.get(RECORDS), token_required=token is not None)
    add_outbound_api(ops, public)  # POST /calls: place an outbound call (bot.outbound.http_api)
    return ops


class OpsListener:
    """The operations Application served on its own port (``start()`` / ``stop()``).

    Args:
        public: The public Application whose objects it shares.
        settings: Process settings (token).
        address: Where to bind (port 0: an ephemeral port).
    """

    def __init__(self, public: web.Application, settings: Settings, address: ListenAddress):
        self.app = create_ops_app(public, settings)
        self._address = address
        self._runner: web.AppRunner | None = None
        self.url = ""

    @property
    def token_required(self) -> bool:
        """Whether requests must carry ``VOICEBOT_OPS_TOKEN``."""
        return self.app[OPS_AUTH].required

    async def start(self) -> str:
        """Bind and serve; the base URL (``http://host:port``, the real port when 0 was asked).

        Raises:
            OSError: the address cannot be bound (in use, not local).
        """
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._address.host, self._address.port)
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        port = runner.addresses[0][1] if runner.addresses else self._address.port
        self.url = ListenAddress(self._address.host, port).url()
        return self.url

    async def stop(self) -> None:
        """Stop serving (idempotent)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def describe(self) -> str:
        """For the startup line: where, and how it is protected."""
        guard = "bearer token required" if self.token_required else "no token: loopback only"
        return f"{self.url} (calls page /, /stats, /metrics, /livez, /readyz; {guard})"
