"""``voicebot emulator``: run the Gemini Live API emulator on its own.

Prints one JSON line, ``{"url": ..., "ca_file": ...}``, then serves until SIGINT/SIGTERM.
Point the SDK at it with ``HttpOptions(base_url=url, async_client_args={"ssl": ctx})`` where
``ctx = ssl.create_default_context(cafile=ca_file)``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the emulator's flags."""
    from sim.emulator.config import FAULT_HELP, VOICES

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = FAULT_HELP + (
        "\n--tool-call N:NAME[:JSON_ARGS] (repeatable): after caller turn N, call NAME "
        "(if the setup declares it),\n  e.g. --tool-call 2:end_call"
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind")
    parser.add_argument("--port", type=int, default=0, help="port (0: pick a free one)")
    parser.add_argument("--think-ms", type=int, default=300, help="delay before each reply")
    parser.add_argument(
        "--setup-ms", type=int, default=400, help="setup -> setupComplete on every connection"
    )
    parser.add_argument("--voice", choices=VOICES, default="wav", help="reply audio")
    parser.add_argument("--greeting-wav", type=Path, help="PCM16 WAV for greetings")
    parser.add_argument("--answer-wav", type=Path, help="PCM16 WAV for replies (voice wav)")
    parser.add_argument("--tone-secs", type=float, default=1.5, help="tone reply length")
    parser.add_argument("--pace", type=float, default=2.0,
                        help="audio seconds sent per second (0: unpaced)")  # fmt: skip
    parser.add_argument("--chunk-ms", type=int, default=80, help="audio per modelTurn message")
    parser.add_argument("--api-key", help="accept only this key (default: any non-empty key)")
    parser.add_argument("--record", type=Path, metavar="FILE",
                        help="append client messages as JSON lines (audio -> length)")  # fmt: skip
    parser.add_argument("--fault", action="append", default=[], metavar="KEY=VALUE,...",
                        help="inject failures (see below)")  # fmt: skip
    parser.add_argument("--tool-call", action="append", default=[], metavar="N:NAME[:JSON]",
                        help="scripted tool call")  # fmt: skip
    parser.add_argument("--seed", type=int, help="seed of the misbehaviour faults' draws")
    limits = parser.add_argument_group("limits like the service's (on by default)")
    limits.add_argument("--connection-secs", type=float, default=600.0,
                        help="connection lifetime (0: none; default 600)")  # fmt: skip
    limits.add_argument("--goaway-lead-secs", type=float, default=60.0,
                        help="goAway this long before a limit (default 60)")  # fmt: skip
    limits.add_argument("--session-secs", type=float, default=900.0,
                        help="audio session limit without context window compression "
                        "(0: none; default 900)")  # fmt: skip
    limits.add_argument("--session-limit-code", type=int, default=1011,
                        help="close code at the session limit (unconfirmed; 1011)")  # fmt: skip
    limits.add_argument("--time-scale", type=float, default=1.0,
                        help="multiply every limit and its goAway lead (0.01: a 10-min "
                        "connection lasts 6 s)")  # fmt: skip
    parser.add_argument("--log-level", default="INFO", help="loguru level for stderr")


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; 1 on a configuration error."""
    import asyncio
    import json
    import signal

    from loguru import logger

    from sim.emulator import EmulatorConfig, LiveEmulator
    from sim.emulator.config import parse_faults, parse_tool_script

    logger.remove()
    logger.add(sys.stderr, level=str(args.log_level).upper())
    try:
        faults = parse_faults(args.fault)
        scripts = tuple(parse_tool_script(spec) for spec in args.tool_call)
        if args.time_scale <= 0:
            raise ValueError(f"--time-scale {args.time_scale}: expected a number above 0")
    except ValueError as exc:
        print(f"voicebot emulator: {exc}", file=sys.stderr)
        return 1
    if args.seed is not None:
        faults.seed = args.seed
    config = EmulatorConfig(
        think_ms=args.think_ms,
        setup_ms=args.setup_ms,
        voice=args.voice,
        tone_secs=args.tone_secs,
        pace=args.pace,
        chunk_ms=args.chunk_ms,
        api_key=args.api_key,
        tool_scripts=scripts,
        record_in_memory=False,
        connection_secs=args.connection_secs or None,
        goaway_lead_secs=args.goaway_lead_secs,
        audio_session_secs=args.session_secs or None,
        session_limit_code=args.session_limit_code,
        time_scale=args.time_scale,
    )
    if args.greeting_wav:
        config.greeting_wav = args.greeting_wav
    if args.answer_wav:
        config.answer_wav = args.answer_wav
    for wav in (config.greeting_wav, config.answer_wav):
        if not wav.is_file():
            print(f"voicebot emulator: {wav}: no such WAV file", file=sys.stderr)
            return 1

    async def serve() -> None:
        emu = LiveEmulator(config, faults, host=args.host, port=args.port, record_path=args.record)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await emu.start()
        print(json.dumps({"url": emu.url, "ca_file": str(emu.ca_file)}), flush=True)
        try:
            await stop.wait()
        finally:
            await emu.stop()
            print(json.dumps({"stopped": True, **emu.stats()}), flush=True)

    try:
        try:
            import uvloop  # optional (the "fast" extra): cheaper sockets and TLS

            loop_factory = uvloop.new_event_loop
        except ImportError:
            loop_factory = None
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(serve())
    except OSError as exc:
        print(
            f"voicebot emulator: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="python -m sim.emulator.cmd", description=__doc__)
    configure(_parser)
    sys.exit(run(_parser.parse_args()))
