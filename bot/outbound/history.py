"""Reading outbound calls back from ``call_status_events`` (``voicebot calls``)."""

from __future__ import annotations

import json
from typing import Any, TextIO

from sqlalchemy import select

from bot.records.database import Database
from bot.records.tables import call_status_events as events

STATUS_ORDER = {"queued": 0, "initiated": 1, "ringing": 2, "in-progress": 3}


def _ordered(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Twilio numbers a call's callbacks (SequenceNumber); they may arrive out of order.
    return sorted(
        rows,
        key=lambda r: (
            r["sequence"] if r["sequence"] is not None else 1 << 30,
            STATUS_ORDER.get(r["status"], 9),
            r["at"],
        ),
    )


async def timeline(db: Database, call_sid: str) -> list[dict[str, Any]]:
    """One call's status callbacks, in Twilio's order (empty: none recorded)."""
    stmt = select(events).where(events.c.call_sid == call_sid)
    async with db.engine.connect() as conn:
        return _ordered([dict(r._mapping) for r in (await conn.execute(stmt)).all()])


def call_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A call from its (ordered) events: first time, last status, who answered, duration."""
    last = rows[-1]
    answered = next((r["answered_by"] for r in reversed(rows) if r["answered_by"]), None)
    duration = next((r["duration_secs"] for r in reversed(rows) if r["duration_secs"]), None)
    return {
        "call_sid": last["call_sid"],
        "started_at": rows[0]["at"],
        "persona": next((r["persona"] for r in rows if r["persona"]), None),
        "called": last["called"],
        "status": last["status"],
        "answered_by": answered,
        "duration_secs": duration,
        "timeline": [r["status"] for r in rows],
    }


async def list_outbound(
    db: Database, persona: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """Outbound calls, newest first, each summarised from its events."""
    stmt = select(events).order_by(events.c.at.desc()).limit(limit * 8)
    if persona:
        stmt = stmt.where(events.c.persona == persona)
    async with db.engine.connect() as conn:
        rows = [dict(r._mapping) for r in (await conn.execute(stmt)).all()]
    by_call: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_call.setdefault(row["call_sid"], []).append(row)
    calls = [call_summary(_ordered(r)) for r in by_call.values()]
    calls.sort(key=lambda c: c["started_at"], reverse=True)
    return calls[:limit]


def print_outbound(calls: list[dict[str, Any]], as_json: bool, out: TextIO) -> None:
    """``voicebot calls list --outbound``: one line per call (or JSON lines)."""
    if as_json:
        for call in calls:
            print(json.dumps(call, default=str), file=out)
        return
    if not calls:
        print("no outbound calls", file=out)
        return
    for c in calls:
        secs = "-" if c["duration_secs"] is None else f"{c['duration_secs']:.0f} s"
        print(
            f"{c['started_at']:%Y-%m-%d %H:%M:%S}  {c['call_sid']}  {c['persona'] or '-'}  "
            f"{c['called']}  {c['status']}  {c['answered_by'] or '-'}  {secs}  "
            f"({' > '.join(c['timeline'])})",
            file=out,
        )


def print_timeline(rows: list[dict[str, Any]], as_json: bool, out: TextIO) -> None:
    """``voicebot calls show``: an outbound call's status timeline."""
    if as_json:
        print(json.dumps({"status_timeline": rows}, default=str, indent=2), file=out)
        return
    first = rows[0]
    print(f"outbound call {first['call_sid']} to {first['called']} "
          f"(persona {first['persona'] or '-'})", file=out)  # fmt: skip
    for r in rows:
        answered = f"  answered by {r['answered_by']}" if r["answered_by"] else ""
        print(f"  {r['at']:%H:%M:%S}  {r['status']}{answered}", file=out)
    print(file=out)
