"""Reading records back: the queries of ``voicebot calls list`` and ``voicebot calls show``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from bot.records.database import Database
from bot.records.tables import calls, tool_calls, turns

_AGO = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT_SECS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``--since``: a date or time, UTC unless given, or an age.

    Dates and times: ``2026-12-01``, ``2026-12-01T14:00``; ages: ``90m``, ``1h``, ``2d``, ``1w``.

    Raises:
        ValueError: naming the value and the accepted forms.
    """
    now = now or datetime.now(UTC)
    if m := _AGO.fullmatch(text.strip()):
        return now - timedelta(seconds=float(m[1]) * _UNIT_SECS[m[2]])
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--since: got {text!r}, expected a date (2026-12-01), a time "
            "(2026-12-01T14:00) or an age (30m, 1h, 2d, 1w)"
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Query:
    """Which calls ``list_calls`` returns, newest first."""

    persona: str | None = None
    since: datetime | None = None
    failed: bool = False
    limit: int = 50


async def list_calls(db: Database, query: Query) -> list[dict[str, Any]]:
    """The ``calls`` rows matching ``query``, newest first."""
    stmt = select(calls).order_by(calls.c.started_at.desc()).limit(query.limit)
    if query.persona:
        stmt = stmt.where(calls.c.persona == query.persona)
    if query.since is not None:
        since = query.since.astimezone(UTC)
        if db.dialect == "sqlite":  # stored as naive UTC text
            since = since.replace(tzinfo=None)
        stmt = stmt.where(calls.c.started_at >= since)
    if query.failed:
        stmt = stmt.where(calls.c.failed.is_(True))
    async with db.engine.connect() as conn:
        return [dict(r._mapping) for r in (await conn.execute(stmt)).all()]


async def get_call(db: Database, call_sid: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One call's row and its turns in order.

    Raises:
        LookupError: no call has this SID.
    """
    async with db.engine.connect() as conn:
        row = (await conn.execute(select(calls).where(calls.c.call_sid == call_sid))).first()
        if row is None:
            raise LookupError(call_sid)
        call = dict(row._mapping)
        stmt = select(turns).where(turns.c.call_id == call["id"]).order_by(turns.c.seq)
        return call, [dict(r._mapping) for r in (await conn.execute(stmt)).all()]


async def tool_calls_of(db: Database, call_id: int) -> list[dict[str, Any]]:
    """A call's persona HTTP tool calls in order (``tool_calls`` rows)."""
    stmt = select(tool_calls).where(tool_calls.c.call_id == call_id).order_by(tool_calls.c.seq)
    async with db.engine.connect() as conn:
        return [dict(r._mapping) for r in (await conn.execute(stmt)).all()]


def tool_call_lines(rows: list[dict[str, Any]]) -> list[str]:
    """``voicebot calls show``'s lines for a call's tool calls (none: no lines)."""
    lines = [f"tool calls: {len(rows)}"] if rows else []
    for t in rows:
        status = f", HTTP {t['http_status']}" if t["http_status"] is not None else ""
        lines.append(
            f"{t['at_secs']:7.2f}  {t['tool']}: {t['outcome']} in {t['latency_secs'] * 1000:.0f} "
            f"ms ({t['attempts']} attempt(s){status}; {t['args_bytes']} B in, "
            f"{t['result_bytes']} B out)"
        )
    return lines
