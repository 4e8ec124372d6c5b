"""``voicebot personas``: check persona files, or show the Live API setup one produces.

``check [DIR]`` loads every persona, prints a table and the warnings, and exits 1 on any error.
``show ID`` prints the exact ``setup`` message (JSON) the SDK would send; nothing is sent.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TextIO

DEFAULT_DIR = Path("config/personas")


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``check`` and ``show`` sub-subcommands."""
    sub = parser.add_subparsers(dest="personas_command", required=True, metavar="ACTION")
    check = sub.add_parser("check", help="check every persona file; exit 1 on any error")
    check.add_argument("directory", nargs="?", type=Path, default=DEFAULT_DIR, metavar="DIR")
    show = sub.add_parser("show", help="print the Live API setup message a persona produces")
    show.add_argument("persona_id", metavar="ID")
    show.add_argument("--personas", type=Path, default=DEFAULT_DIR, metavar="DIR")
    show.add_argument("--caller", default="+15550000001", help="caller number (From)")
    show.add_argument("--called", default=None, help="called number (To); default: its first")
    show.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a stream custom parameter (repeatable)",
    )
    show.add_argument("--time", default=None, help="ISO time for ${local_time}; default: now")


def _features(persona: object) -> str:
    from pipelines.personas import Persona

    assert isinstance(persona, Persona)
    s = persona.session
    on = []
    if s.affective_dialog:
        on.append("affective")
    if s.proactive_audio:
        on.append("proactive")
    if s.thinking is not None:
        on.append(
            f"thinking={s.thinking.level.lower()}"
            if s.thinking.level
            else f"thinking={s.thinking.budget}"
        )
    if s.context_window_compression is not None:
        on.append("compression")
    if s.activity_detection.disabled:
        on.append("server-vad-off")
    if persona.barge_in.local_vad:
        on.append("local-vad")
    if persona.tools.end_call:
        on.append("end_call")
    if persona.tools.transfer_call:
        on.append("transfer")
    if persona.http_tools:
        on.append(f"http-tools={len(persona.http_tools)}")
    if persona.limits.max_call_secs:
        on.append("max-duration")
    if persona.limits.idle_timeout_secs:
        on.append("idle")
    if not persona.dtmf.enabled:
        on.append("dtmf-off")
    elif persona.dtmf.keys:
        on.append("dtmf-keys")
    if persona.api_version() != "v1beta":
        on.append(persona.api_version())
    return ",".join(on) or "-"


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")


def _check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from bot.settings import process_environ
    from pipelines.personas.loader import check_directory

    results, cross = check_directory(args.directory, process_environ())
    errors = [e for r in results for e in r.errors] + cross
    rows = [["ID", "MODEL", "VOICE", "NUMBERS", "FEATURES"]]
    for r in results:
        p = r.persona
        if p is None:
            continue
        numbers = ",".join(p.numbers) or "-"
        pid = f"{p.id} (default)" if p.default else p.id
        rows.append([pid, p.model, p.voice, numbers, _features(p)])
    if len(rows) > 1:
        _table(rows, out)
    for r in results:
        for w in r.warnings:
            err.write(f"warning: {w}\n")
        for n in r.notes:
            err.write(f"note: {n}\n")
    for e in errors:
        err.write(f"error: {e}\n")
    if errors:
        err.write(f"{len(errors)} error(s) in {args.directory}\n")
        return 1
    out.write(f"{len(results)} persona(s) OK in {args.directory}\n")
    return 0


def _show(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from datetime import datetime

    from loguru import logger

    from bot.settings import process_environ
    from pipelines.personas import (
        PersonaConfigError,
        call_variables,
        load_personas,
        setup_message,
    )

    logger.disable("pipecat")
    try:
        try:
            personas = load_personas(args.personas, process_environ())
        except PersonaConfigError as e:
            err.write(f"{e}\n")
            return 1
        persona = personas.get(args.persona_id)
        if persona is None:
            from pipelines.personas.checks import did_you_mean

            ids = sorted(personas.personas)
            err.write(
                f"{args.personas}: persona: got {args.persona_id!r}, expected one of "
                f"{', '.join(ids)}{did_you_mean(args.persona_id, ids)}\n"
            )
            return 1
        custom: dict[str, str] = {}
        for item in args.param:
            name, sep, value = item.partition("=")
            if not sep:
                err.write(f"--param: got {item!r}, expected NAME=VALUE\n")
                return 2
            custom[name] = value
        now = datetime.fromisoformat(args.time) if args.time else None
        called = args.called or (persona.numbers[0] if persona.numbers else "+15550000002")
        variables = call_variables(
            persona, caller=args.caller, called=called, custom=custom, now=now
        )
        message = setup_message(persona, variables)
        out.write(json.dumps(message, indent=2, ensure_ascii=False) + "\n")
        err.write(f"api_version: {persona.api_version()}\n")
        return 0
    finally:
        logger.enable("pipecat")


def run(args: argparse.Namespace) -> int:
    """Run ``check`` or ``show``; returns the exit code."""
    if args.personas_command == "check":
        return _check(args, sys.stdout, sys.stderr)
    return _show(args, sys.stdout, sys.stderr)
