"""The example booking service behind ``config/personas/appointments.yaml``'s HTTP tools.

A small aiohttp app standing in for a clinic's scheduling API, so the appointments persona
works offline (``python -m sim.tool_server``, port 8095 by default) and tests can see what a
tool sent:

* ``GET /slots?date=YYYY-MM-DD`` (or ``POST /slots`` with ``{"date": …}``): the free
  half-hour slots that day, 09:00-16:30 on weekdays, none at weekends, minus bookings;
* ``POST /bookings`` with ``{"date", "time", "name"}``: ``201 {"booking_id", …}``; ``409`` when
  the slot is not free, ``400`` (with what is wrong) for a bad body;
* ``GET /health``.

It answers like a real service on a real network, not instantly: each request waits a
latency drawn around ``latency_ms`` (default 150 ms, between half and twice that; seeded).
Faults (``ToolServerFaults``, ``--fault``): ``slow=SECS`` holds every answer that long (a
tool's timeout), ``error_rate=P`` answers 503 with that probability, ``fail_first=N`` answers
the first N requests 503 (retries), ``down`` closes each connection without an answer. With
``token`` set, requests need ``Authorization: Bearer <token>`` (else 401). Every request is
kept in ``requests`` (method, path, query, JSON body, headers) for tests.

May import aiohttp and the standard library only (no ``bot``, ``pipelines`` or other ``sim``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

DEFAULT_PORT = 8095
FIRST_SLOT = dt.time(9, 0)
LAST_SLOT = dt.time(16, 30)
_JSON = web.RequestKey("json", object)  # the parsed body, kept by the middleware


@dataclass
class ToolServerFaults:
    """Misbehaviour on demand (see the module docstring)."""

    slow_secs: float = 0.0
    error_rate: float = 0.0
    fail_first: int = 0
    down: bool = False

    @classmethod
    def parse(cls, text: str) -> ToolServerFaults:
        """``slow=10,error_rate=0.3,fail_first=2,down`` -> faults; raises ValueError."""
        faults = cls()
        for item in filter(None, (p.strip() for p in text.split(","))):
            key, _, value = item.partition("=")
            if key == "down" and not value:
                faults.down = True
            elif key in ("slow", "error_rate") and value:
                setattr(faults, "slow_secs" if key == "slow" else key, float(value))
            elif key == "fail_first" and value:
                faults.fail_first = int(value)
            else:
                raise ValueError(
                    f"--fault: got {item!r}, expected slow=SECS, error_rate=P, fail_first=N or down"
                )
        return faults


@dataclass
class ToolServer:
    """The booking service (module docstring); ``start()`` returns its base URL."""

    latency_ms: float = 150.0
    faults: ToolServerFaults = field(default_factory=ToolServerFaults)
    token: str | None = None
    seed: int = 7
    requests: list[dict[str, Any]] = field(default_factory=list)
    bookings: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        self._runner: web.AppRunner | None = None
        self.url = ""

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/health", self._health)
        app.router.add_get("/slots", self._slots)
        app.router.add_post("/slots", self._slots)
        app.router.add_post("/bookings", self._book)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0: any free port); the base URL."""
        # A held answer (the slow fault) must not hold up a stop.
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0][1]
        self.url = f"http://{host}:{bound}"
        return self.url

    async def stop(self) -> None:
        """Stop listening and close connections."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- the service ----------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
        self.requests.append(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "json": body,
                "headers": dict(request.headers),
            }
        )
        request[_JSON] = body
        f = self.faults
        if f.down:
            assert request.transport is not None
            request.transport.close()  # no answer at all: the client sees a broken connection
            raise web.HTTPServiceUnavailable()
        wait = self.latency_ms * self._random.uniform(0.5, 2.0) / 1000 + f.slow_secs
        await asyncio.sleep(wait)
        if len(self.requests) <= f.fail_first or self._random.random() < f.error_rate:
            return web.json_response({"error": "service unavailable"}, status=503)
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"error": "missing or wrong bearer token"}, status=401)
        response: web.StreamResponse = await handler(request)
        return response

    async def _health(self, _request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def _slots(self, request: web.Request) -> web.Response:
        found = request[_JSON]
        body: dict[str, Any] = found if isinstance(found, dict) else {}
        text = request.query.get("date") or body.get("date")
        day = _date(text)
        if day is None:
            return web.json_response(
                {"error": f"date: got {text!r}, expected YYYY-MM-DD"}, status=400
            )
        free = [t for t in _day_slots(day) if (day.isoformat(), t) not in self.bookings]
        return web.json_response({"date": day.isoformat(), "slots": free})

    async def _book(self, request: web.Request) -> web.Response:
        found = request[_JSON]
        body: dict[str, Any] = found if isinstance(found, dict) else {}
        day, time, name = _date(body.get("date")), body.get("time"), body.get("name")
        if day is None or not isinstance(time, str) or not isinstance(name, str) or not name:
            return web.json_response(
                {"error": "expected {date: YYYY-MM-DD, time: HH:MM, name: text}"}, status=400
            )
        key = (day.isoformat(), time)
        if time not in _day_slots(day) or key in self.bookings:
            return web.json_response({"error": f"{time} on {key[0]} is not free"}, status=409)
        booking = {"booking_id": f"B{len(self.bookings) + 1:04d}", "date": key[0], "time": time}
        self.bookings[key] = {**booking, "name": name}
        return web.json_response(booking, status=201)


def _date(text: Any) -> dt.date | None:
    try:
        return dt.date.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None


def _day_slots(day: dt.date) -> list[str]:
    if day.weekday() >= 5:
        return []
    out, at = [], dt.datetime.combine(day, FIRST_SLOT)
    while at.time() <= LAST_SLOT:
        out.append(at.strftime("%H:%M"))
        at += dt.timedelta(minutes=30)
    return out


@contextlib.asynccontextmanager
async def running_tool_server(**kwargs: Any) -> AsyncIterator[ToolServer]:
    """A ``ToolServer`` on a free loopback port for the block (tests)."""
    server = ToolServer(**kwargs)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> None:
    """``python -m sim.tool_server``: serve until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m sim.tool_server",
        description="The example booking service for the appointments persona's HTTP tools.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--latency-ms", type=float, default=150.0, help="typical answer time")
    parser.add_argument("--fault", default="", help="slow=SECS,error_rate=P,fail_first=N,down")
    parser.add_argument("--token", default=None, help="require Authorization: Bearer TOKEN")
    args = parser.parse_args(argv)
    try:
        faults = ToolServerFaults.parse(args.fault)
    except ValueError as e:
        parser.error(str(e))
    server = ToolServer(latency_ms=args.latency_ms, faults=faults, token=args.token)

    async def serve() -> None:
        url = await server.start(args.host, args.port)
        print(json.dumps({"url": url}), flush=True)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
