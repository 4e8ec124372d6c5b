"""``voicebot serve``: the phone-bot server (with the embedded Live API emulator when no key).

The embedded emulator is wired here, in the command, with a lazy import of ``sim``: the server
module (``bot.server``) and the app never import the lab. So is the benchmark's stage sampler
(``bot.stage_profile``), started only when ``VOICEBOT_PROFILE=PATH`` is set.

Production mode: a server reachable from outside (``TWILIO_AUTH_TOKEN`` set, or ``--host``
not loopback) never falls back to the emulator silently; without ``GEMINI_API_KEY`` it refuses
to start unless ``--emulator`` asks for the emulator explicitly.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.server import GeminiSource
    from bot.settings import Settings
    from pipelines.gemini.clients import GeminiClients

EMULATOR_API_KEY = "emulator-key"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to bind (default 8080)")
    parser.add_argument(
        "--ops-port",
        default=None,
        metavar="[HOST:]PORT",
        help="operations listener (/stats, health): HOST:PORT, PORT on 127.0.0.1, 0 for any "
        "free port, or off (default VOICEBOT_OPS_PORT, else 127.0.0.1:9464); a non-loopback "
        "HOST needs VOICEBOT_OPS_TOKEN",
    )
    parser.add_argument(
        "--personas", type=Path, default=None, help="persona folder (default config/personas)"
    )
    parser.add_argument(
        "--emulator",
        action="store_true",
        help="use the embedded Live API emulator even when GEMINI_API_KEY is set",
    )
    parser.add_argument(
        "--drain-secs",
        type=float,
        default=2.0,
        help="on SIGINT/SIGTERM, how long live calls may run on to their natural end before "
        "each hears a goodbye and is hung up (up to 30 s more); a second signal ends it "
        "early (default 2; multiplied by VOICEBOT_TIME_SCALE)",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=None,
        help="text: dated lines (default); json: one object per line with ts, level, message, "
        "logger, call_sid, persona (default VOICEBOT_LOG_FORMAT, else text)",
    )
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop when installed")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="N server processes under Gunicorn, sharing --port (one per core); each also "
        "listens for forwarded streams on VOICEBOT_PEER_URL's port + its index (default "
        "127.0.0.1:PORT+1+index) and for operations on the ops port + 1 + its index; the ops "
        "port itself aggregates them (bot.workers). Default: one process, no Gunicorn",
    )


def embedded_emulator(why: str) -> GeminiSource:
    """Gemini clients on the embedded Live API emulator, started and stopped with the server."""

    @contextlib.asynccontextmanager
    async def source() -> AsyncIterator[GeminiClients]:
        from loguru import logger

        from pipelines.gemini.clients import GeminiClients
        from sim.emulator import EmulatorConfig, LiveEmulator

        # No in-memory recording: a long-running server must not keep every message.
        emulator = LiveEmulator(EmulatorConfig(record_in_memory=False))
        url = await emulator.start()
        try:
            logger.warning(
                f"{why}: using the embedded Live API emulator at {url} "
                "(replies are recorded or synthetic audio, not Gemini)"
            )
            yield GeminiClients(EMULATOR_API_KEY, url, emulator.ca_file)
        finally:
            await emulator.stop()

    return source


class NoKeyInProduction(RuntimeError):
    """No ``GEMINI_API_KEY`` on a server reachable from outside, and no ``--emulator``."""


def gemini_source(
    settings: Settings, force_emulator: bool, exposed: str | None = None
) -> GeminiSource | None:
    """The embedded emulator when asked for or when there is no key; else None (the key).

    Args:
        settings: Process settings.
        force_emulator: ``--emulator`` was given.
        exposed: Why the server is reachable from outside (``reachable_from_outside``), if it is.

    Raises:
        NoKeyInProduction: no key, reachable from outside, and no ``--emulator``.
    """
    if force_emulator:
        return embedded_emulator("--emulator given")
    if settings.use_emulator:
        if exposed:
            raise NoKeyInProduction(
                f"GEMINI_API_KEY is not set, and this server is reachable from outside "
                f"({exposed}): callers would get the Live API emulator, not Gemini. Fix: set "
                "GEMINI_API_KEY to your Gemini API key, or pass --emulator to serve the "
                "emulator on purpose."
            )
        return embedded_emulator("GEMINI_API_KEY is not set")
    return None


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; exit status 1 on a startup failure."""
    import asyncio
    import sys

    from bot.logs import setup_logging
    from bot.settings import Settings, SettingsError

    try:
        settings = Settings.from_env(
            personas_dir=args.personas, ops_listen=args.ops_port, log_format=args.log_format
        )
    except SettingsError as e:
        print(f"voicebot serve: {e}", file=sys.stderr)
        return 1
    # Before bot.server imports Pipecat, which logs at import: every line in the chosen form.
    setup_logging(settings.log_level, settings.log_format)
    from bot.listen_address import OpsExposureError, check_ops_exposure, reachable_from_outside

    exposed = reachable_from_outside(settings, args.host)
    try:
        source = gemini_source(settings, args.emulator, exposed)
        # A refused start says so before the heavy imports below (Pipecat: seconds of CPU).
        check_ops_exposure(settings)
    except (NoKeyInProduction, OpsExposureError) as e:
        print(f"voicebot serve: {e}", file=sys.stderr)
        return 1
    from bot.server import ServeOptions, serve

    options = ServeOptions(
        host=args.host,
        port=args.port,
        drain_secs=args.drain_secs,
    )
    if args.workers is not None:  # Gunicorn's master; each worker runs bot.server.serve
        from bot.workers import WorkersError, make_plan, run_workers

        on_uvloop = args.uvloop or os.environ.get("VOICEBOT_UVLOOP") == "1"
        try:
            plan = make_plan(args.workers, settings, options, args.emulator, exposed, on_uvloop)
        except WorkersError as e:
            print(f"voicebot serve: {e}", file=sys.stderr)
            return 1
        return run_workers(plan)
    if args.uvloop or os.environ.get("VOICEBOT_UVLOOP") == "1":
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            print("voicebot serve: uvloop is not installed; using asyncio", file=sys.stderr)
    if profile := os.environ.get("VOICEBOT_PROFILE"):  # opt-in, for `make bench` (off: unset)
        from bot.stage_profile import start_sampler

        start_sampler(Path(profile))
    return asyncio.run(serve(settings, options, source))
