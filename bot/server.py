"""Server lifecycle: load personas, start the emulator if needed, serve, stop on a signal."""

from __future__ import annotations

import asyncio
import signal
import sys
from dataclasses import dataclass

from aiohttp import web
from loguru import logger

from bot.app import create_app
from bot.app_keys import CALLS
from bot.persona_store import PersonaStore
from bot.settings import Settings
from pipelines.gemini_service import GeminiClients
from pipelines.personas import PersonaConfigError

EMULATOR_API_KEY = "emulator-key"


@dataclass(frozen=True)
class ServeOptions:
    """Command-line options of ``voicebot serve``."""

    host: str = "127.0.0.1"
    port: int = 8080
    force_emulator: bool = False
    drain_secs: float = 2.0


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


async def serve(settings: Settings, options: ServeOptions) -> int:
    """Run the server until SIGINT or SIGTERM; return the exit status."""
    try:
        store = PersonaStore(settings.personas_dir)
    except PersonaConfigError as e:
        print(f"voicebot serve: invalid personas:\n{e}", file=sys.stderr)
        return 1

    emulator = None
    if options.force_emulator or settings.use_emulator:
        from sim.emulator import EmulatorConfig, LiveEmulator

        # No in-memory recording: a long-running server must not keep every message.
        emulator = LiveEmulator(EmulatorConfig(record_in_memory=False))
        url = await emulator.start()
        gemini = GeminiClients(EMULATOR_API_KEY, url, emulator.ca_file)
        why = "--emulator given" if options.force_emulator else "GEMINI_API_KEY is not set"
        logger.warning(
            f"{why}: using the embedded Live API emulator at {url} "
            "(replies are recorded or synthetic audio, not Gemini)"
        )
    else:
        assert settings.gemini_api_key is not None
        gemini = GeminiClients(
            settings.gemini_api_key.get_secret_value(),
            settings.gemini_base_url,
            settings.gemini_ca_file,
        )

    _startup_warnings(settings)
    app = create_app(settings, store, gemini, drain_secs=options.drain_secs)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, options.host, options.port, backlog=1024)
        await site.start()
    except OSError as e:
        where = f"{options.host}:{options.port}"
        print(f"voicebot serve: cannot listen on {where}: {e}", file=sys.stderr)
        await runner.cleanup()
        if emulator is not None:
            await emulator.stop()
        return 1

    names = ", ".join(sorted(store.current.personas))
    logger.info(
        f"voicebot serving on http://{options.host}:{options.port} "
        f"(webhook POST /twilio/voice, media /twilio/media; personas: {names})"
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    store.install_sighup(loop)
    try:
        await stop.wait()
    finally:
        logger.info("stopping: no new calls; ending live calls")
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        # Drain while still listening, so /healthz says 503 and streams whose TwiML was just
        # served can still be answered (and ended politely); then stop listening.
        await app[CALLS].drain(options.drain_secs)
        await runner.cleanup()
        if emulator is not None:
            await emulator.stop()
        logger.info("stopped")
    return 0
