"""The fake Twilio REST API: the Calls resource, basic-auth, error bodies, the CPS limit.

``async with running_twilio_api(config) as api:`` serves it on a loopback port (``api.url`` is
the ``TWILIO_API_BASE_URL``); ``api.calls`` holds every placed call (``phone.SimCall``) with its
timeline, ``api.created_at`` the times create requests were accepted, ``api.refused_429`` the
creates refused over the CPS limit, ``api.requests`` every request (path, form, auth), like
``sim.testing.FakeTwilioRest``.

Errors are Twilio's: ``{"code", "message", "more_info", "status"}`` with its codes (20003
authenticate, 20404 not found, 20429 too many requests, 21201/21211 the ``To``, 21212 the
``From``, 21205 the ``Url``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from sim.caller.frame_ticker import FrameTicker
from sim.caller.twilio_webhook import new_sid
from sim.twilio_api.numbers import FakeTwilioConfig
from sim.twilio_api.phone import FINAL, PhoneNetwork, SimCall

PREFIX = "/2010-04-01/Accounts/{account}"
E164_DIGITS = range(8, 16)  # '+' and 7-15 digits
API: web.AppKey[FakeTwilioApi] = web.AppKey("fake_twilio_api")


def twilio_error(status: int, code: int, message: str) -> web.Response:
    """Twilio's error body."""
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return web.json_response(body, status=status)


def _e164(value: str | None) -> bool:
    return bool(value and value[0] == "+" and value[1:].isdigit() and len(value) in E164_DIGITS)


@dataclass
class FakeTwilioApi:
    """The running fake (see the module docstring)."""

    config: FakeTwilioConfig
    url: str = ""
    calls: dict[str, SimCall] = field(default_factory=dict)
    created_at: list[float] = field(default_factory=list)
    refused_429: int = 0
    max_open_calls: int = 0  # the most calls not yet in a final status at once
    requests: list[dict[str, Any]] = field(default_factory=list)
    network: PhoneNetwork | None = None
    _tokens: float = 1.0
    _refilled: float = field(default_factory=time.monotonic)

    async def wait_all_ended(self, timeout_secs: float = 30.0) -> bool:
        """Wait until every placed call reached a final status (False on timeout)."""
        deadline = time.monotonic() + timeout_secs
        while any(c.status not in FINAL for c in self.calls.values()):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        if self.network is not None and self.network.tasks:  # their last callbacks
            await asyncio.wait(
                set(self.network.tasks), timeout=max(0.1, deadline - time.monotonic())
            )
        return True

    def take_cps_token(self) -> bool:
        """The account's calls-per-second bucket (burst 1)."""
        now = time.monotonic()
        self._tokens = min(1.0, self._tokens + (now - self._refilled) * self.config.cps)
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


def _authenticated(request: web.Request, api: FakeTwilioApi) -> web.Response | None:
    expected = base64.b64encode(
        f"{api.config.account_sid}:{api.config.auth_token}".encode()
    ).decode()
    got = request.headers.get("Authorization", "")
    if not hmac.compare_digest(got.encode(), f"Basic {expected}".encode()):
        return twilio_error(401, 20003, "Authenticate")
    if request.match_info["account"] != api.config.account_sid:
        return twilio_error(404, 20404, f"The requested resource {request.path} was not found")
    return None


@web.middleware
async def _common(request: web.Request, handler: Any) -> web.StreamResponse:
    api = request.app[API]
    form = await request.post() if request.method == "POST" else {}
    api.requests.append(
        {
            "method": request.method,
            "path": request.path,
            "form": {k: str(v) for k, v in form.items()},
            "auth": request.headers.get("Authorization"),
        }
    )
    await asyncio.sleep(api.config.api_latency_secs)
    if (refused := _authenticated(request, api)) is not None:
        return refused
    response: web.StreamResponse = await handler(request)
    return response


async def create_call(request: web.Request) -> web.Response:
    """``POST Calls.json``."""
    api = request.app[API]
    data = await request.post()
    form: dict[str, list[str]] = {}
    for key, value in data.items():
        form.setdefault(key, []).append(str(value))
    to, from_ = form.get("To", [""])[0], form.get("From", [""])[0]
    if not to:
        return twilio_error(400, 21201, "No 'To' number is specified")
    if not _e164(to):
        return twilio_error(400, 21211, f"Invalid 'To' Phone Number: {to}")
    if not _e164(from_):
        return twilio_error(400, 21212, f"Invalid From Number (caller ID): {from_}")
    if not form.get("Url") and not form.get("Twiml"):
        return twilio_error(400, 21205, "Url parameter is required.")
    if not api.take_cps_token():
        api.refused_429 += 1
        return twilio_error(429, 20429, "Too Many Requests")
    api.created_at.append(time.monotonic())
    call = SimCall(new_sid("CA"), to, from_, form)
    api.calls[call.sid] = call
    open_now = sum(1 for c in api.calls.values() if c.status not in FINAL)
    api.max_open_calls = max(api.max_open_calls, open_now)
    assert api.network is not None
    api.network.start(call)
    return web.json_response(call.resource(api.config.account_sid), status=201)


def _call_or_404(request: web.Request) -> SimCall | web.Response:
    api = request.app[API]
    sid = request.match_info["sid"]
    call = api.calls.get(sid)
    if call is None:
        return twilio_error(404, 20404, f"The requested resource {request.path} was not found")
    return call


async def fetch_call(request: web.Request) -> web.Response:
    """``GET Calls/{sid}.json``."""
    call = _call_or_404(request)
    if isinstance(call, web.Response):
        return call
    return web.json_response(call.resource(request.app[API].config.account_sid))


async def list_calls(request: web.Request) -> web.Response:
    """``GET Calls.json`` (``Status``, ``To`` filters; one page of ``PageSize``, default 50)."""
    api = request.app[API]
    calls = list(api.calls.values())
    if status := request.query.get("Status"):
        calls = [c for c in calls if c.status == status]
    if to := request.query.get("To"):
        calls = [c for c in calls if c.to == to]
    size = int(request.query.get("PageSize", "50") or 50)
    page = [c.resource(api.config.account_sid) for c in reversed(calls)][:size]
    return web.json_response({"calls": page, "page": 0, "page_size": size})


async def update_call(request: web.Request) -> web.Response:
    """``POST Calls/{sid}.json``: ``Status=completed|canceled`` hangs up, ``Twiml`` redirects."""
    call = _call_or_404(request)
    if isinstance(call, web.Response):
        return call
    form = await request.post()
    status = str(form["Status"]) if "Status" in form else None
    twiml = str(form["Twiml"]) if "Twiml" in form else None
    if status in ("completed", "canceled"):
        call.hung_up_by_api = True
        call.hangup.set()
    elif twiml is not None:
        call.redirects.append(twiml)
        call.hangup.set()  # the stream ends; the new TwiML (a <Dial>) is not simulated
    elif status is not None:
        return twilio_error(400, 21218, f"Invalid 'Status': {status}")
    return web.json_response(call.resource(request.app[API].config.account_sid))


def create_app(api: FakeTwilioApi) -> web.Application:
    """The fake's aiohttp application."""
    app = web.Application(middlewares=[_common])
    app[API] = api
    app.router.add_post(f"{PREFIX}/Calls.json", create_call)
    app.router.add_get(f"{PREFIX}/Calls.json", list_calls)
    app.router.add_get(f"{PREFIX}/Calls/{{sid}}.json", fetch_call)
    app.router.add_post(f"{PREFIX}/Calls/{{sid}}.json", update_call)
    return app


@contextlib.asynccontextmanager
async def running_twilio_api(
    config: FakeTwilioConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[FakeTwilioApi]:
    """The fake served on ``host:port`` (0: a free port); its calls are ended on exit."""
    api = FakeTwilioApi(config or FakeTwilioConfig())
    async with aiohttp.ClientSession() as session, FrameTicker() as ticker:
        api.network = PhoneNetwork(api.config, session, ticker)
        runner = web.AppRunner(create_app(api), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        api.url = f"http://{host}:{runner.addresses[0][1]}"
        try:
            yield api
        finally:
            for call in api.calls.values():
                call.hangup.set()
            if api.network.tasks:
                await asyncio.wait(set(api.network.tasks), timeout=5)
            for task in list(api.network.tasks):
                task.cancel()
            await runner.cleanup()
