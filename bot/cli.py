"""The ``voicebot`` command: serve, emulator, call, loadtest, personas, calls.

Each subcommand lives in its own module exposing ``configure(parser)`` and ``run(args) -> int``;
those modules import nothing heavy at the top, so ``voicebot --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": (
        "bot.serve_cmd",
        "serve Twilio calls (embedded emulator when GEMINI_API_KEY is unset)",
    ),
    "emulator": ("sim.emulator.cmd", "run the Gemini Live API emulator on its own"),
    "call": ("sim.caller.cmd", "place one simulated Twilio call and print its timeline"),
    "loadtest": ("sim.loadtest.cmd", "place many simulated calls and report what callers felt"),
    "personas": ("bot.personas_cmd", "check personas, or show the Live API setup one produces"),
    "calls": ("bot.calls_cmd", "list past calls, or show one's record and transcript"),
    "dial": ("bot.outbound.dial_cmd", "place one outbound call through Twilio's REST API"),
    "campaign": ("bot.outbound.campaign_cmd", "call every number of a CSV within rate limits"),
}


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, one subparser per command."""
    parser = argparse.ArgumentParser(prog="voicebot", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        sp = sub.add_parser(name, help=help_text, description=help_text)
        module.configure(sp)
        sp.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``voicebot`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
