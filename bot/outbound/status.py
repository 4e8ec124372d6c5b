"""``POST /twilio/outbound/status``: Twilio's status callbacks for the calls we place.

Signed like every webhook (``bot.twilio_security``: 403 without a valid ``X-Twilio-Signature``
when ``TWILIO_AUTH_TOKEN`` is set), checked (a ``CallSid`` and a known ``CallStatus``, else 400
saying what was expected), and written as one insert-only ``call_status_events`` row
(``bot.records``): no state in the process, so any process of a deployment may take any
callback (the webhook and the stream of the same call may be served elsewhere). The persona
comes from the callback URL's query (we set it when placing the call; Twilio signs it).

Logs: DEBUG per callback; one INFO line when a call reaches its final status (the CallSid, the
status, who answered; never the number).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from aiohttp import web
from loguru import logger
from sqlalchemy import insert
from sqlalchemy.exc import SQLAlchemyError

from bot.app_keys import RECORDS, SETTINGS
from bot.outbound.placing import FINAL_STATUSES, STATUS_PATH
from bot.records.record import mask_number
from bot.records.tables import call_status_events
from bot.twilio_routes import signed_form

STATUSES = frozenset({"queued", "initiated", "ringing", "in-progress", *FINAL_STATUSES})
CALL_SID = re.compile(r"CA[0-9a-fA-F]{32}")
WRITE_TIMEOUT_SECS = 5.0


def _refuse(text: str) -> web.HTTPBadRequest:
    logger.warning(f"outbound status callback refused 400: {text}")
    return web.HTTPBadRequest(text=f"Bad request: {text}\n")


def _when(params: Mapping[str, str]) -> datetime:
    try:
        at = parsedate_to_datetime(params.get("Timestamp", ""))
    except (TypeError, ValueError):
        return datetime.now(UTC)
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _int(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


def event_row(params: Mapping[str, str], persona: str | None, numbers: str) -> dict[str, object]:
    """The ``call_status_events`` row of one callback form (numbers masked by ``numbers``)."""
    duration = _int(params.get("CallDuration"))
    return {
        "call_sid": params["CallSid"],
        "direction": (params.get("Direction") or "outbound-api")[:16],
        "persona": persona[:128] if persona else None,
        "called": mask_number(params.get("To", ""), numbers)[:64],
        "status": params["CallStatus"],
        "answered_by": (params.get("AnsweredBy") or None) and params["AnsweredBy"][:32],
        "sequence": _int(params.get("SequenceNumber")),
        "duration_secs": float(duration) if duration is not None else None,
        "at": _when(params),
    }


async def outbound_status(request: web.Request) -> web.Response:
    """Check, record and acknowledge (204) one status callback."""
    params = await signed_form(request)
    call_sid, status = params.get("CallSid", ""), params.get("CallStatus", "")
    if not CALL_SID.fullmatch(call_sid):
        raise _refuse("CallSid: expected 'CA' and 32 hex digits")
    if status not in STATUSES:
        known = ", ".join(sorted(STATUSES))
        raise _refuse(f"CallStatus: got {status[:40]!r}, expected one of {known}")
    persona = request.query.get("persona")
    row = event_row(params, persona, request.app[SETTINGS].record_numbers)
    logger.debug(f"outbound call {call_sid}: status {status}")
    if status in FINAL_STATUSES:
        answered = f", answered by {row['answered_by']}" if row["answered_by"] else ""
        secs = f", {row['duration_secs']:.0f} s" if row["duration_secs"] is not None else ""
        logger.info(f"outbound call {call_sid}: {status}{answered}{secs}")
    records = request.app.get(RECORDS)
    if records is not None:
        try:
            async with asyncio.timeout(WRITE_TIMEOUT_SECS):
                await records.wait_migrated()  # the writer migrates the schema at start
                async with records.database.engine.begin() as conn:
                    await conn.execute(insert(call_status_events).values(**row))
        except (SQLAlchemyError, OSError, TimeoutError) as e:
            first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            logger.warning(f"outbound call {call_sid}: status {status} not recorded: {first}")
    return web.Response(status=204)


def add_outbound_routes(app: web.Application) -> None:
    """Register the status-callback route on the public application."""
    app.router.add_post(STATUS_PATH, outbound_status)
