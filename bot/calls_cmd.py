"""``voicebot calls``: past calls from the records database (``VOICEBOT_DATABASE_URL``).

``list [--persona P] [--since 2026-12-01|1h] [--failed] [--limit N] [--json]`` prints a table
of calls, newest first; ``show CALL_SID [--json]`` prints one call's record and its transcript
(each turn with its time from the call's start, ``[cut]`` on a bot turn a barge-in cut, with
what the caller heard of it); ``upgrade`` brings the schema to the newest migration (the server
does that by itself at start). Exit 1 with a message when the database cannot be read, 2 for a
call that is not there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import datetime
from typing import Any, TextIO

DEFAULT_LIMIT = 50


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``list``, ``show`` and ``upgrade`` actions."""
    sub = parser.add_subparsers(dest="calls_command", required=True, metavar="ACTION")
    ls = sub.add_parser("list", help="list past calls, newest first")
    ls.add_argument("--persona", default=None, metavar="ID", help="only this persona's calls")
    ls.add_argument(
        "--since", default=None, metavar="WHEN", help="a date/time (2026-12-01) or age (1h, 2d)"
    )
    ls.add_argument("--failed", action="store_true", help="only calls that failed")
    ls.add_argument("--limit", type=int, default=DEFAULT_LIMIT, metavar="N")
    ls.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    ls.add_argument(
        "--outbound", action="store_true", help="outbound calls placed: status and who answered"
    )
    show = sub.add_parser("show", help="one call's record and transcript")
    show.add_argument("call_sid", metavar="CALL_SID")
    show.add_argument("--json", action="store_true", help="the record and turns as JSON")
    sub.add_parser("upgrade", help="migrate the records schema to the newest version")
    parser.add_argument(
        "--database-url", default=None, metavar="URL", help="default: VOICEBOT_DATABASE_URL"
    )


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run the action; the exit status."""
    from bot.records.database import DatabaseError, database_url
    from bot.settings import Settings, SettingsError

    out = out or sys.stdout
    try:
        raw = args.database_url or Settings.from_env().database_url
        url = database_url(raw)
    except (SettingsError, DatabaseError) as e:
        print(f"voicebot calls: VOICEBOT_DATABASE_URL: {e}", file=sys.stderr)
        return 1
    if url is None:
        print("voicebot calls: call records are off (VOICEBOT_DATABASE_URL=off)", file=sys.stderr)
        return 1
    return asyncio.run(_run(args, url, out))


async def _run(args: argparse.Namespace, url: str, out: TextIO) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from bot.records.database import Database
    from bot.records.reader import (
        Query,
        get_call,
        list_calls,
        parse_since,
        tool_call_lines,
        tool_calls_of,
    )

    if args.calls_command != "upgrade" and (missing := _missing_sqlite_file(url)):
        print(
            f"voicebot calls: no records database at {missing} (the server creates it at "
            "its first start; set VOICEBOT_DATABASE_URL or --database-url to another one)",
            file=sys.stderr,
        )
        return 1
    db = Database(url)
    try:
        if args.calls_command == "upgrade":
            await db.upgrade()
            current, _ = await db.revision()
            print(f"records schema at revision {current} ({db.where})", file=out)
            return 0
        current, head = await db.revision()
        if current is None:
            print(
                f"voicebot calls: {db.where} has no call records yet (no schema); the server "
                "creates it at start, or run `voicebot calls upgrade`",
                file=sys.stderr,
            )
            return 1
        if args.calls_command == "list":
            try:
                since = parse_since(args.since) if args.since else None
            except ValueError as e:
                print(f"voicebot calls list: {e}", file=sys.stderr)
                return 1
            if args.outbound:  # bot.outbound: from the status callbacks
                from bot.outbound.history import list_outbound, print_outbound

                found = await list_outbound(db, args.persona, max(1, args.limit))
                print_outbound(found, args.json, out)
                return 0
            query = Query(args.persona, since, args.failed, max(1, args.limit))
            rows = await list_calls(db, query)
            if args.json:
                for row in rows:
                    print(json.dumps(row, default=str), file=out)
            else:
                print_table(rows, out)
            return 0
        from bot.outbound.history import print_timeline, timeline

        statuses = await timeline(db, args.call_sid)  # an outbound call's status callbacks
        try:
            call, turns = await get_call(db, args.call_sid)
        except LookupError:
            if statuses:  # placed, never streamed (busy, no answer, a machine)
                print_timeline(statuses, args.json, out)
                return 0
            print(f"voicebot calls show: no call {args.call_sid!r} in {db.where}", file=sys.stderr)
            return 2
        if statuses:
            print_timeline(statuses, args.json, out)
        tools = await tool_calls_of(db, call["id"])  # persona HTTP tools (pipelines.tools)
        if args.json:
            record = {**call, "turns": turns, "tool_calls": tools}
            print(json.dumps(record, default=str, indent=2), file=out)
        else:
            print_call(call, turns, out)
            for line in tool_call_lines(tools):
                print(line, file=out)
        return 0
    except (SQLAlchemyError, OSError) as e:
        first = str(e).splitlines()[0][:300] if str(e) else e.__class__.__name__
        print(f"voicebot calls: cannot read {db.where}: {first}", file=sys.stderr)
        return 1
    finally:
        await db.close()


def _missing_sqlite_file(url: str) -> str | None:
    """The path of a SQLite URL whose file does not exist (reading must not create it)."""
    from pathlib import Path

    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return None if Path(parsed.database).exists() else parsed.database


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _when(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S")


COLUMNS = ("started (UTC)", "call SID", "persona", "caller", "secs", "end reason", "barge",
           "hand", "resp p50", "setup")  # fmt: skip


def print_table(rows: list[dict[str, Any]], out: TextIO) -> None:
    """The calls as a plain-text table, one line each."""
    if not rows:
        print("no calls", file=out)
        return
    lines = [
        (
            _when(r["started_at"]),
            r["call_sid"],
            r["persona"],
            r["caller"],
            f"{r['duration_secs']:.1f}",
            ("FAILED " if r["failed"] else "") + r["end_reason"],
            str(r["barge_ins"]),
            str(r["handovers"]),
            _secs(r["response_p50_secs"]),
            _secs(r["setup_secs"]),
        )
        for r in rows
    ]
    widths = [max(len(c), *(len(line[i]) for line in lines)) for i, c in enumerate(COLUMNS)]
    print("  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True)).rstrip(), file=out)
    for line in lines:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip(), file=out)


def print_call(call: dict[str, Any], turns: list[dict[str, Any]], out: TextIO) -> None:
    """One call's record, then its transcript turn by turn."""
    fields = [
        ("call", call["call_sid"]),
        ("stream", call["stream_sid"]),
        ("persona", call["persona"]),
        ("caller / called", f"{call['caller']} -> {call['called']}"),
        ("started (UTC)", _when(call["started_at"])),
        ("duration", f"{call['duration_secs']:.1f} s"),
        ("ended", ("FAILED: " if call["failed"] else "") + call["end_reason"]),
        (
            "setup / first audio",
            f"{_secs(call['setup_secs'])} s / {_secs(call['first_audio_secs'])} s",
        ),  # fmt: skip
        (
            "response p50 / max",
            f"{_secs(call['response_p50_secs'])} s / "
            f"{_secs(call['response_max_secs'])} s ({call['responses']} responses)",
        ),  # fmt: skip
        (
            "barge-ins / handovers / reconnects",
            f"{call['barge_ins']} / {call['handovers']} / {call['reconnects']}",
        ),  # fmt: skip
        ("tokens", ", ".join(f"{k} {v}" for k, v in (call["tokens"] or {}).items()) or "-"),
        ("cost", "-" if call["cost_usd"] is None else f"${call['cost_usd']:.4f}"),
        ("bad input", ", ".join(f"{k} {v}" for k, v in (call["bad_input"] or {}).items()) or "-"),
    ]
    if call["live_api_close"]:
        fields.append(("Live API close", call["live_api_close"]))
    width = max(len(k) for k, _ in fields)
    for key, value in fields:
        print(f"{key.ljust(width)}  {value}", file=out)
    print(file=out)
    if not call["transcript_kept"]:
        print(f"transcript: not kept for this persona ({len(turns)} turns)", file=out)
    elif not turns:
        print("transcript: none (the persona transcribes nothing?)", file=out)
    for t in turns:
        mark = ""
        if t["interrupted"]:
            heard = t["heard_text"] or ""
            mark = f"  [cut after {_secs(t['heard_secs'])} s; heard: {heard!r}]"
        print(f"{t['at_secs']:7.2f}  {t['speaker']:<6}  {t['text']}{mark}", file=out)
