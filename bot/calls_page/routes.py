"""The calls page's handlers: the page itself and the JSON it reads (see ``bot.calls_page``).

Everything is read-only. Past calls come from the records database through
``bot.records.reader`` (async SQLAlchemy: the event loop never waits on the database); live
calls from the ``CallRegistry`` in memory. Numbers are shown as the records keep them
(``VOICEBOT_RECORD_NUMBERS``, masked by default); live calls show none. Responses are never
cached, and every one carries a strict Content-Security-Policy: the page runs only its own
script and puts caller-controlled text (transcripts) on screen with ``textContent`` only.

DNS rebinding: without ``VOICEBOT_OPS_TOKEN`` the listener is loopback-only and open, so a web
page in the operator's browser could point its own name at 127.0.0.1 and read transcripts.
Then the page and its JSON answer only a ``Host`` that is an IP address or ``localhost``
(421 otherwise); with a token, a rebound name has neither the header nor the cookie.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from aiohttp import web
from loguru import logger
from sqlalchemy.exc import SQLAlchemyError

from bot.calls import CallRegistry
from bot.records.reader import Query, get_call, list_calls, parse_since
from bot.records.writer import RecordWriter

PAGE_PATHS = ("/", "/calls")
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
STATIC = {
    "calls.js": "text/javascript",
    "calls.css": "text/css",
}
MAX_LIMIT = 500
_SID = re.compile(r"[A-Za-z0-9_-]{1,64}")

CALLS_REGISTRY: web.AppKey[CallRegistry] = web.AppKey("calls_page_registry", CallRegistry)
WRITER: web.AppKey[RecordWriter | None] = web.AppKey("calls_page_records")


@functools.cache
def _static(name: str) -> bytes:
    """A file of ``static/``, read once (a few kB each; no disk read per request)."""
    return resources.files("bot.calls_page").joinpath("static", name).read_bytes()


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, headers=SECURITY_HEADERS, dumps=_dumps)


def _dumps(data: Any) -> str:
    return json.dumps(data, default=_default, separators=(",", ":"))


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        at = value if value.tzinfo else value.replace(tzinfo=UTC)  # SQLite keeps naive UTC
        return at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    raise TypeError(f"not JSON: {type(value).__name__}")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


async def page(_request: web.Request) -> web.Response:
    """The page (``static/index.html``)."""
    return web.Response(
        body=_static("index.html"),
        content_type="text/html",
        charset="utf-8",
        headers=SECURITY_HEADERS,
    )


async def static(request: web.Request) -> web.Response:
    """The page's script and style sheet (a fixed list: no path from the request is opened)."""
    name = request.match_info["name"]
    kind = STATIC.get(name)
    if kind is None:
        raise web.HTTPNotFound(headers=SECURITY_HEADERS)
    return web.Response(body=_static(name), content_type=kind, headers=SECURITY_HEADERS)


async def no_icon(_request: web.Request) -> web.Response:
    """No icon (a browser asks for one: a 404 would be an error in its console)."""
    return web.Response(status=204, headers=SECURITY_HEADERS)


async def live_calls(request: web.Request) -> web.Response:
    """``{"calls": [...]}``: every live call, longest first, with state and last lines."""
    calls = sorted(request.app[CALLS_REGISTRY].calls, key=lambda r: r.started)
    now = datetime.now(UTC)
    return _json(
        {
            "now": now,
            "calls": [
                {
                    "call_sid": r.call_sid,
                    "persona": r.persona_id,
                    "started_at": datetime.fromtimestamp(r.live.started_wall, UTC),
                    "duration_secs": round(r.duration_secs, 1),
                    "state": r.live.state(),
                    "lines": r.live.recent(),
                }
                for r in calls
            ],
        }
    )


def _records(request: web.Request) -> RecordWriter | None:
    return request.app[WRITER]


OFF = "call records are off (VOICEBOT_DATABASE_URL=off): no past calls to show"


async def past_calls(request: web.Request) -> web.Response:
    """``{"calls": [...]}``: past calls, newest first; ``?since=&persona=&failed=1&limit=``."""
    writer = _records(request)
    if writer is None:
        return _json({"calls": [], "records": False, "note": OFF})
    q = request.query
    try:
        since = parse_since(q["since"]) if q.get("since") else None
    except ValueError as e:
        return _error(400, f"since: {e}".replace("--since: ", ""))
    try:
        limit = int(q.get("limit", "50"))
    except ValueError:
        return _error(400, f"limit: got {q['limit']!r}, expected a whole number 1-{MAX_LIMIT}")
    if not 1 <= limit <= MAX_LIMIT:
        return _error(400, f"limit: got {limit}, expected 1-{MAX_LIMIT}")
    failed = q.get("failed", "") in ("1", "true", "yes", "on")
    query = Query(persona=q.get("persona") or None, since=since, failed=failed, limit=limit)
    try:
        rows = await list_calls(writer.database, query)
    except (SQLAlchemyError, OSError) as e:
        return _unreadable(writer, e)
    for row in rows:
        row.pop("id", None)
    return _json({"calls": rows, "records": True})


async def one_call(request: web.Request) -> web.Response:
    """``{"call": {...}, "turns": [...]}``: one past call's record and transcript."""
    sid = request.match_info["call_sid"]
    if not _SID.fullmatch(sid):
        return _error(400, "call SID: expected up to 64 letters, digits, '-' or '_'")
    writer = _records(request)
    if writer is None:
        return _error(404, OFF)
    try:
        call, turns = await get_call(writer.database, sid)
    except LookupError:
        live = request.app[CALLS_REGISTRY].get(sid) is not None
        why = "it is still live; its record is written when it ends" if live else "no record"
        return _error(404, f"call {sid}: {why}")
    except (SQLAlchemyError, OSError) as e:
        return _unreadable(writer, e)
    call.pop("id", None)
    for turn in turns:
        turn.pop("id", None)
        turn.pop("call_id", None)
    return _json({"call": call, "turns": turns})


def _unreadable(writer: RecordWriter, error: Exception) -> web.Response:
    first = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
    logger.warning(f"calls page: cannot read the records database ({type(error).__name__})")
    return _error(503, f"cannot read the records database {writer.database.where}: {first}")


def host_is_literal(host: str | None) -> bool:
    """Whether a ``Host`` header names an IP address or ``localhost`` (not a DNS name)."""
    if not host:
        return False
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host  # host:port, or IPv6
    name = name.strip("[]").split("]")[0].lower()
    if name == "localhost":
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _literal_host_only(handler: Handler) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        if not host_is_literal(request.host):
            return web.Response(
                status=421,
                text="421: without VOICEBOT_OPS_TOKEN the calls page answers only "
                "http://127.0.0.1:PORT/ or http://localhost:PORT/ (an IP address or localhost "
                "as the host); set VOICEBOT_OPS_TOKEN to reach it by another name\n",
                headers=SECURITY_HEADERS,
            )
        return await handler(request)

    return guarded


def add_calls_page_routes(
    app: web.Application,
    calls: CallRegistry,
    records: RecordWriter | None,
    *,
    token_required: bool,
) -> None:
    """Route the page and its JSON on the operations Application ``app``.

    Args:
        app: The operations Application.
        calls: The live calls.
        records: The records writer (its database is read); None: records are off.
        token_required: Whether the listener requires ``VOICEBOT_OPS_TOKEN``; without it the
            page answers only a literal ``Host`` (see the module docstring).
    """
    app[CALLS_REGISTRY] = calls
    app[WRITER] = records

    def get(path: str, handler: Handler) -> None:
        app.router.add_get(path, handler if token_required else _literal_host_only(handler))

    for path in PAGE_PATHS:
        get(path, page)
    get("/static/{name}", static)
    get("/favicon.ico", no_icon)
    get("/api/calls/live", live_calls)
    get("/api/calls", past_calls)
    get("/api/calls/{call_sid}", one_call)
