"""Server lifecycle: load personas, open the Gemini clients, serve, drain on a signal.

SIGTERM or SIGINT starts the drain (``bot.calls``): no new calls, live calls run on for
``--drain-secs``, then hear a goodbye and are hung up; a second signal cuts the window short.

Where the Gemini clients come from is the caller's choice (``GeminiSource``): by default the
key and endpoint in the settings; ``voicebot serve`` passes the embedded Live API emulator when
there is no key (``bot.serve_cmd``), so this module does not depend on ``sim``.

Two listeners on one event loop: the public one (Twilio webhooks, media streams, health) and
the operations one (``/stats``, health; ``bot.ops``). Production mode: a server reachable from
outside (``bot.listen_address.reachable_from_outside``) needs a real key, and a key is checked
once with Google before either listener opens (``bot.gemini_key``): a rejected key stops the
start, exit 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from aiohttp import web
from loguru import logger

from bot.app import create_app
from bot.app_keys import AUTH, CALLS, FORWARDER
from bot.gemini_key import KeyRejected, check_gemini_key
from bot.listen_address import OpsExposureError, check_ops_exposure
from bot.ops import OpsListener
from bot.peers import default_peer_url
from bot.persona_store import PersonaStore
from bot.request_limits import runner_options
from bot.settings import Settings
from pipelines._compat import CompatError
from pipelines.gemini.clients import GeminiClients
from pipelines.personas import PersonaConfigError

# Opens the process's Gemini clients for the server's lifetime (and closes what it started).
GeminiSource = Callable[[], AbstractAsyncContextManager[GeminiClients]]
# More listeners and tasks, entered once both listeners are up and left after the drain
# (bot.workers: a Gunicorn worker's peer listener and the metrics aggregation).
ServeExtras = Callable[[web.Application, web.AppRunner], AbstractAsyncContextManager[None]]


@dataclass(frozen=True)
class ServeOptions:
    """Command-line options of ``voicebot serve``."""

    host: str = "127.0.0.1"
    port: int = 8080
    drain_secs: float = 2.0  # the drain window; the goodbyes after it take up to WRAP_UP_SECS
    # Listening sockets handed over by a process manager (bot.workers), served instead of
    # binding host:port; and what it adds (ServeExtras).
    sockets: tuple[socket.socket, ...] = ()
    extras: ServeExtras | None = None


def settings_gemini(settings: Settings) -> GeminiSource:
    """The Gemini clients of ``GEMINI_API_KEY`` (and ``GEMINI_BASE_URL``/``GEMINI_CA_FILE``)."""

    @contextlib.asynccontextmanager
    async def source() -> AsyncIterator[GeminiClients]:
        if settings.gemini_api_key is None:
            raise ValueError(
                "voicebot serve: GEMINI_API_KEY is not set and no other Gemini source was "
                "given; set the key, or start through `voicebot serve` (embedded emulator)"
            )
        yield GeminiClients(
            settings.gemini_api_key.get_secret_value(),
            settings.gemini_base_url,
            settings.gemini_ca_file,
        )

    return source


def _startup_warnings(settings: Settings) -> None:
    if not settings.signatures_required:
        logger.warning(
            "TWILIO_AUTH_TOKEN is not set: Twilio signatures are not checked, so only loopback "
            "clients are served. Set it (and PUBLIC_URL) before exposing the server."
        )
    elif not settings.public_url:
        logger.warning(
            "PUBLIC_URL is not set: signatures are checked against the Host header, which a "
            "proxy may rewrite. Set PUBLIC_URL to the https:// URL Twilio calls."
        )
    if not (settings.twilio_account_sid and settings.twilio_auth_token):
        logger.warning(
            "TWILIO_ACCOUNT_SID/TWILIO_AUTH_TOKEN are not both set: the bot cannot hang up or "
            "transfer through the REST API; it closes the stream instead."
        )


async def serve(
    settings: Settings, options: ServeOptions, gemini_source: GeminiSource | None = None
) -> int:
    """Run the server until SIGINT or SIGTERM; return the exit status.

    Args:
        settings: Process settings.
        options: Command-line options.
        gemini_source: Where the Gemini clients come from (default: ``settings_gemini``).
    """
    try:
        check_ops_exposure(settings)
    except OpsExposureError as e:
        print(f"voicebot serve: {e}", file=sys.stderr)
        return 1
    try:
        store = PersonaStore(settings.personas_dir)
    except PersonaConfigError as e:
        print(f"voicebot serve: invalid personas:\n{e}", file=sys.stderr)
        return 1
    async with (gemini_source or settings_gemini(settings))() as gemini:
        if gemini_source is None:  # the settings' key: ask Google once, before serving
            try:
                await check_gemini_key(gemini, settings.gemini_base_url or "Google")
            except KeyRejected as e:
                print(f"voicebot serve: {e}", file=sys.stderr)
                return 1
        return await _serve(settings, options, store, gemini)


async def _serve(
    settings: Settings, options: ServeOptions, store: PersonaStore, gemini: GeminiClients
) -> int:
    _startup_warnings(settings)
    try:
        app = create_app(settings, store, gemini, drain_secs=options.drain_secs)
    except CompatError as e:
        print(f"voicebot serve: {e}", file=sys.stderr)
        return 1
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, **runner_options(settings.time_scale)
    )
    await runner.setup()
    try:
        for sock in options.sockets:
            await web.SockSite(runner, sock, backlog=1024).start()
        if not options.sockets:
            await web.TCPSite(runner, options.host, options.port, backlog=1024).start()
    except OSError as e:
        where = f"{options.host}:{options.port}"
        print(f"voicebot serve: cannot listen on {where}: {e}", file=sys.stderr)
        await runner.cleanup()
        return 1
    # Signed into each call's token: a stream landing on another process is relayed here.
    # (Handed-over sockets are shared by workers: bot.workers gives each its own peer URL.)
    if not settings.peer_url and not options.sockets:
        port = runner.addresses[0][1] if runner.addresses else options.port
        if peer := default_peer_url(options.host, port):
            app[FORWARDER].set_self_url(peer)

    ops = None
    if (ops_address := settings.ops_address) is not None:
        ops = OpsListener(app, settings, ops_address)
        try:
            await ops.start()
        except OSError as e:
            print(
                f"voicebot serve: cannot listen for operations on {settings.ops_listen}: {e}; "
                "pick another with --ops-port / VOICEBOT_OPS_PORT (HOST:PORT, PORT, 0 or off)",
                file=sys.stderr,
            )
            await runner.cleanup()
            return 1
    names = ", ".join(sorted(store.current.personas))
    where_ops = ops.describe() if ops else "off (VOICEBOT_OPS_PORT=off)"
    logger.info(
        f"voicebot serving on http://{options.host}:{options.port} "
        f"(webhook POST /twilio/voice, media /twilio/media; personas: {names}); "
        f"operations on {where_ops}; peer URL {app[AUTH].peer_url or 'none'}"
    )
    extras = contextlib.AsyncExitStack()
    if options.extras is not None:
        await extras.enter_async_context(options.extras(app, runner))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    store.install_sighup(loop)
    calls = app[CALLS]
    try:
        await stop.wait()
    finally:
        # A second signal ends the drain window at once: the live calls are wrapped up now.
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, calls.hurry)
        # Drain while still listening, so /readyz says 503 and streams whose TwiML was just
        # served can still be answered (and ended politely); then stop listening.
        await calls.drain(options.drain_secs)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await extras.aclose()
        await runner.cleanup()
        if ops is not None:
            await ops.stop()
        logger.info("stopped")
    return 0
