"""Place one simulated Twilio call over asyncio/aiohttp, exactly as Twilio would.

``result = await place_call(url, CallPlan.default())``: POST the incoming-call webhook (signed when
``auth_token`` is given), read the TwiML (following ``<Redirect>``s as Twilio does: the same
parameters POSTed to the new URL, signed anew), open the ``<Stream>`` WebSocket (upgrade signed
too), run the plan through :class:`sim.caller.core.CallerCore`, and return a :class:`CallResult`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import aiohttp

from sim.caller.core import CallerCore
from sim.caller.frame_ticker import FrameTicker
from sim.caller.plan import CallPlan
from sim.caller.result import CallEvent, CallResult
from sim.caller.twilio_webhook import (
    DEFAULT_FROM,
    DEFAULT_TO,
    REDIRECT_FETCH_SECS,
    RedirectChain,
    Twiml,
    new_sid,
    parse_twiml,
    twilio_signature,
    voice_url,
    webhook_params,
    write_wav,
)

__all__ = [
    "DEFAULT_FROM",
    "DEFAULT_TO",
    "CallPlan",
    "CallResult",
    "Twiml",
    "parse_twiml",
    "place_call",
    "twilio_signature",
    "voice_url",
    "webhook_params",
    "write_wav",
]


def _failed(res: CallResult, t0: float, now: float, failure: str, how: str = "") -> CallResult:
    res.ok = False
    res.failure = failure
    res.end_reason = how or f"error: {failure}"
    res.events.append(CallEvent(round(now - t0, 4), "failure", failure))
    return res


async def place_call(
    url: str,
    plan: CallPlan | None = None,
    *,
    auth_token: str | None = None,
    record: str | Path | None = None,
    to: str = DEFAULT_TO,
    from_: str = DEFAULT_FROM,
    persona: str | None = None,
    session: aiohttp.ClientSession | None = None,
    ticker: FrameTicker | None = None,
    connect_timeout_secs: float = 10.0,
) -> CallResult:
    """Place one simulated call and return what the caller experienced.

    Args:
        url: the server's base URL (``http://host:port``) or its full webhook URL.
        plan: what the caller does; :meth:`CallPlan.default` when None.
        auth_token: sign the webhook and the stream upgrade with this Twilio auth token.
        record: write what the caller heard to this WAV file (PCM16 8 kHz).
        to: the dialled number (``To``/``Called``).
        from_: the caller's number (``From``/``Caller``).
        persona: added to the webhook URL as ``?persona=ID`` (and signed with it).
        session: an aiohttp session to reuse (one per process in a load test).
        ticker: a shared :class:`FrameTicker`; a private one is started when None.
        connect_timeout_secs: limit for the webhook request and for the WebSocket upgrade.

    Returns:
        The :class:`CallResult`; failures are reported in it, never raised.
    """
    plan = plan or CallPlan.default()
    async with contextlib.AsyncExitStack() as stack:
        if session is None:
            session = await stack.enter_async_context(aiohttp.ClientSession())
        if ticker is None:
            ticker = await stack.enter_async_context(FrameTicker())
        return await _call(
            url, plan, session, ticker, auth_token, record, to, from_, persona,
            connect_timeout_secs,
        )  # fmt: skip
    raise AssertionError("unreachable")  # pragma: no cover


async def _call(
    url: str,
    plan: CallPlan,
    session: aiohttp.ClientSession,
    ticker: FrameTicker,
    auth_token: str | None,
    record: str | Path | None,
    to: str,
    from_: str,
    persona: str | None,
    timeout_secs: float,
) -> CallResult:
    call_sid, account_sid = new_sid("CA"), "AC" + "0" * 32
    res = CallResult(call_sid)
    t0 = time.monotonic()
    chain = RedirectChain(voice_url(url, persona))
    params = webhook_params(call_sid, account_sid, from_, to)
    timeout = aiohttp.ClientTimeout(total=timeout_secs)
    while True:
        hook = chain.url
        headers = {}
        if auth_token:
            headers["X-Twilio-Signature"] = twilio_signature(auth_token, hook, params)
        try:
            async with session.post(hook, data=params, headers=headers, timeout=timeout) as resp:
                body = await resp.text()
                if resp.status != 200:
                    return _failed(res, t0, time.monotonic(), f"webhook: HTTP {resp.status}")
        except (aiohttp.ClientError, TimeoutError) as e:
            why = f"webhook: {type(e).__name__}: {e}".rstrip(": ")
            return _failed(res, t0, time.monotonic(), why)
        at = round(time.monotonic() - t0, 4)
        res.events.append(CallEvent(at, "webhook", "HTTP 200, TwiML read"))
        try:
            tw = parse_twiml(body)
        except ValueError as e:
            return _failed(res, t0, time.monotonic(), f"twiml: {e}")
        try:
            if not chain.follow(tw.redirect, tw.redirect_method):
                break
        except ValueError as e:
            return _failed(res, t0, time.monotonic(), f"twiml: {e}")
        res.redirects = chain.redirects
        await asyncio.sleep(REDIRECT_FETCH_SECS)
    if not tw.stream_url:
        if tw.say_only is not None:
            how = f"apology TwiML: {tw.say_only!r}"
            res.twiml_say, res.twiml_say_voice, res.twiml_say_language = (
                tw.say_only, tw.say_voice, tw.say_language,
            )  # fmt: skip
            return _failed(res, t0, time.monotonic(), "rejected: TwiML <Say> without <Stream>", how)
        return _failed(res, t0, time.monotonic(), "twiml: no <Connect><Stream url=…>")
    return await run_stream(session, ticker, tw, plan, res, t0, account_sid, auth_token, record)


async def run_stream(
    session: aiohttp.ClientSession,
    ticker: FrameTicker,
    tw: Twiml,
    plan: CallPlan,
    res: CallResult,
    t0: float,
    account_sid: str,
    auth_token: str | None = None,
    record: str | Path | None = None,
) -> CallResult:
    """Open the TwiML's ``<Stream>`` and run ``plan`` on it (the webhook was already fetched).

    Used by :func:`place_call` and by a simulated Twilio that fetched the webhook itself (an
    outbound call, ``sim.twilio_api``). ``res`` holds the call's SID and its events so far;
    ``t0`` is the call's start on ``time.monotonic``. Returns the finished :class:`CallResult`.
    """
    call_sid, loop = res.call_sid, asyncio.get_running_loop()
    assert tw.stream_url is not None
    if plan.stream_connect_secs > 0:  # Twilio's media server connecting to the stream URL
        await asyncio.sleep(plan.stream_connect_secs)
    ws_headers = {}
    if auth_token:
        ws_headers["X-Twilio-Signature"] = twilio_signature(auth_token, tw.stream_url, {})
    try:
        ws = await session.ws_connect(
            tw.stream_url,
            headers=ws_headers,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
            autoping=True,
            compress=0,  # Twilio does not negotiate permessage-deflate
            max_msg_size=4 << 20,
        )
    except aiohttp.WSServerHandshakeError as e:
        return _failed(res, t0, time.monotonic(), f"stream: upgrade HTTP {e.status}")
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        return _failed(res, t0, time.monotonic(), f"stream: {type(e).__name__}: {e}".rstrip(": "))
    core = CallerCore.for_twiml(
        plan, tw, t0=t0, call_sid=call_sid, account_sid=account_sid, record=record is not None
    )
    core.res.events = res.events + core.res.events
    core.res.redirects = res.redirects
    async with ws:
        try:
            for m in core.open(time.monotonic()):
                await ws.send_str(m)
        except (aiohttp.ClientError, ConnectionError) as e:
            core.fail(time.monotonic(), f"stream: send failed: {e!r}")
            return core.result(time.monotonic())
        await _converse(ws, core, ticker, loop, plan)
    result = core.result(time.monotonic())
    if record is not None and core.buffer.recording is not None:
        write_wav(record, core.buffer.recording)
    return result


async def _converse(
    ws: aiohttp.ClientWebSocketResponse,
    core: CallerCore,
    ticker: FrameTicker,
    loop: asyncio.AbstractEventLoop,
    plan: CallPlan,
) -> None:
    entry = ticker.add(core, ws.send_str)
    sid = core.res.call_sid
    reader = asyncio.create_task(_read(ws, core, loop), name=f"call:{sid}:recv")
    waiter = asyncio.create_task(entry.finished.wait(), name=f"call:{sid}:hangup-wait")
    try:
        await asyncio.wait(
            {reader, waiter},
            timeout=plan.hangup_after_secs + 30.0,
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        ticker.remove(entry)
        for t in (waiter,):
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
    if entry.error is not None:
        core.fail(time.monotonic(), f"stream: send failed: {entry.error!r}")
    elif not core.done:
        core.fail(time.monotonic(), "caller: hard time limit reached")
    if not ws.closed:
        with contextlib.suppress(Exception):
            await ws.close()
    try:
        await asyncio.wait_for(reader, 5.0)
    except TimeoutError:
        pass
    except asyncio.CancelledError:
        raise
    finally:
        if not reader.done():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


async def _read(
    ws: aiohttp.ClientWebSocketResponse, core: CallerCore, loop: asyncio.AbstractEventLoop
) -> None:
    code: int | None = None
    reason = ""
    while True:
        msg = await ws.receive()
        now = time.monotonic()
        if msg.type == aiohttp.WSMsgType.TEXT:
            for out in core.on_message(msg.data, now):
                await ws.send_str(out)
        elif msg.type == aiohttp.WSMsgType.BINARY:
            core.on_binary(len(msg.data), now)  # Twilio drops it: error 31950
        elif msg.type == aiohttp.WSMsgType.CLOSE:
            code, reason = msg.data, str(msg.extra or "")
            break
        elif msg.type == aiohttp.WSMsgType.ERROR:
            core.fail(now, f"stream: {ws.exception()!r}")
            break
        else:  # CLOSING / CLOSED
            code = ws.close_code
            break
    if not core.closed:
        core.on_closed(time.monotonic(), code, reason)
