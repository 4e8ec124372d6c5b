"""``voicebot serve``: the phone-bot server (with the embedded Live API emulator when no key)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to bind (default 8080)")
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
        help="on SIGINT/SIGTERM, how long live calls may go on before they are ended",
    )
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop when installed")


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; exit status 1 on a startup failure."""
    import asyncio
    import sys

    from bot.logs import setup_logging
    from bot.server import ServeOptions, serve
    from bot.settings import Settings, SettingsError

    try:
        settings = Settings.from_env(personas_dir=args.personas)
    except SettingsError as e:
        print(f"voicebot serve: {e}", file=sys.stderr)
        return 1
    setup_logging(settings.log_level)
    options = ServeOptions(
        host=args.host,
        port=args.port,
        force_emulator=args.emulator,
        drain_secs=args.drain_secs,
    )
    if args.uvloop or os.environ.get("VOICEBOT_UVLOOP") == "1":
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            print("voicebot serve: uvloop is not installed; using asyncio", file=sys.stderr)
    return asyncio.run(serve(settings, options))
