"""``GET /twilio/media``: the Media Stream WebSocket; one call per connection.

Before the pipeline starts, the handler reads Twilio's ``connected`` and ``start`` messages
itself (Pipecat's serializer ignores ``start``). Answers to bad input in this phase:

| input before ``start``           | answer                                                   |
|----------------------------------|----------------------------------------------------------|
| text that is not JSON, binary    | ignored and counted (at most 20, then closed 1008)       |
| unknown event                    | ignored and counted                                      |
| ``media`` / ``dtmf`` / ``mark``  | closed 1008 "protocol error: '<event>' before 'start'"   |
| ``start`` without stream/call SID| closed 1008 "protocol error: 'start' lacks …"            |
| bad ``call_token`` (forged, other call or URL, missing while signatures are enforced) | 1008 |
| ``call_token`` expired           | closed 1008 "call token expired"                         |
| ``call_token`` used before       | closed 1008 "call token replay: …" (WARNING: replay)     |
| parameters the token did not sign| closed 1008 "parameters differ from the signed call (…)" |
| no ``start`` within 10 s         | closed 1008 "protocol error: no 'start' within 10 s"     |
| ``stop`` or socket closed        | nothing opened; ends quietly                             |
| token naming another process     | relayed to it (``bot.stream_forward``), which checks it  |

After ``start``, the pipeline's serializer answers bad input (see ``pipelines/twilio/serializer``).
No Gemini session is opened for a connection that does not pass this phase. The persona,
caller, called number and custom parameters of the call come from the signed ``call_token``
(``Authenticator.authorise_start``), never from the ``start`` message itself.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections import Counter
from typing import Any

from aiohttp import WSMsgType, web
from loguru import logger

from bot.app_keys import AUTH, CALLS, FORWARDER, PERSONAS, POST_CALL, RECORDS, RESOURCES, SETTINGS
from bot.call_tokens import CallGrant, CallTokenError, CallTokenReplay, LedgerFull
from bot.calls import CallRecord
from bot.gc_policy import GC_POLICY
from bot.records.record import summary_of
from bot.warm_sessions import claim as claim_warm
from pipelines.call.pipeline import CallPipeline
from pipelines.call.resources import CallInfo
from pipelines.personas import call_variables, explain_rejection
from pipelines.twilio.input_limits import parse_message

# Twilio's largest message is `start` (a few hundred bytes plus the <Parameter>s, each under
# 500 chars; ours carry a handful); a 20 ms `media` message is ~350 B. 16 KiB leaves a wide
# margin and caps what one message costs to buffer and parse (bigger: closed 1009).
MAX_MESSAGE_BYTES = 16 * 1024
START_TIMEOUT_SECS = 10.0
MAX_JUNK_BEFORE_START = 20
CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN = 1013


class ProtocolError(Exception):
    """The peer broke the Media Streams protocol before the call started."""


async def _read_start(
    ws: web.WebSocketResponse,
    junk: Counter[str],
    timeout_secs: float = START_TIMEOUT_SECS,
    read: list[str] | None = None,
) -> dict[str, Any] | None:
    """Read up to Twilio's ``start`` message; ``None`` if the peer left first.

    ``read`` collects the raw ``connected`` and ``start`` texts (a relay replays them).

    Every parse goes through ``input_limits.parse_message``: JSON nested too deep is junk
    (``too_deep``), never a ``RecursionError``.
    """
    deadline = time.monotonic() + timeout_secs
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ProtocolError(f"no 'start' within {timeout_secs:g} s")
        try:
            msg = await ws.receive(timeout=remaining)
        except TimeoutError:
            raise ProtocolError(f"no 'start' within {timeout_secs:g} s") from None
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return None
        if sum(junk.values()) >= MAX_JUNK_BEFORE_START:
            raise ProtocolError("too many invalid messages before 'start'")
        if msg.type != WSMsgType.TEXT:
            junk["binary"] += 1
            continue
        data, bad = parse_message(msg.data)
        if bad is not None:
            junk[bad] += 1  # invalid_json or too_deep
            continue
        event = data.get("event") if isinstance(data, dict) else None
        if event in ("connected", "start") and read is not None:
            read.append(msg.data)
        if event == "connected":
            continue
        if event == "start":
            return data
        if event == "stop":
            return None
        if event in ("media", "dtmf", "mark"):
            raise ProtocolError(f"'{event}' before 'start'")
        junk["unknown_event"] += 1


def _start_fields(start: dict[str, Any]) -> tuple[str, str, str, dict[str, str]]:
    """``(callSid, streamSid, accountSid, customParameters)`` of a ``start`` message."""
    body = start.get("start")
    if not isinstance(body, dict):
        raise ProtocolError("'start' has no 'start' object")
    stream_sid = body.get("streamSid") or start.get("streamSid")
    call_sid = body.get("callSid")
    if not isinstance(stream_sid, str) or not stream_sid:
        raise ProtocolError("'start' lacks streamSid")
    if not isinstance(call_sid, str) or not call_sid:
        raise ProtocolError("'start' lacks callSid")
    custom = body.get("customParameters") or {}
    if not isinstance(custom, dict):
        custom = {}
    params = {str(k): str(v) for k, v in custom.items()}
    return call_sid, stream_sid, str(body.get("accountSid") or ""), params


def _call_info(call_sid: str, stream_sid: str, account_sid: str, grant: CallGrant) -> CallInfo:
    return CallInfo(
        call_sid=call_sid,
        stream_sid=stream_sid,
        account_sid=account_sid,
        caller=grant.caller,
        called=grant.called,
        custom=dict(grant.custom),
    )


def _sid_for_log(sid: str) -> str:
    """A callSid fit for a log line (it is the peer's text until a token vouches for it)."""
    return sid if re.fullmatch(r"[A-Za-z0-9]{1,64}", sid) else "(malformed callSid)"


async def media(request: web.Request) -> web.StreamResponse:
    """Serve one call's media stream."""
    app = request.app
    refusal = app[AUTH].check_upgrade(request)
    if refusal:
        logger.warning(f"media upgrade refused: {refusal}")
        raise web.HTTPForbidden(text=f"Forbidden: {refusal}\n")

    ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES, autoping=True)
    await ws.prepare(request)
    junk: Counter[str] = Counter()
    try:
        read: list[str] = []
        start = await _read_start(ws, junk, START_TIMEOUT_SECS * app[SETTINGS].time_scale, read)
        if start is None:
            return ws
        call_sid, stream_sid, account_sid, params = _start_fields(start)
    except ProtocolError as e:
        logger.warning(f"media stream closed: protocol error: {e}")
        await ws.close(code=CLOSE_POLICY, message=f"protocol error: {e}"[:120].encode())
        return ws
    # Another process admitted this call (its token names that peer): relay it there.
    if await app[FORWARDER].take(request, ws, call_sid, params, read):
        return ws
    try:
        grant = app[AUTH].authorise_start(request, call_sid, params)
    except LedgerFull as e:
        logger.error(f"call {_sid_for_log(call_sid)} refused at stream start: {e}")
        await ws.close(code=CLOSE_TRY_AGAIN, message=b"server busy")
        return ws
    except CallTokenError as e:
        # A replay is a captured TwiML or stream used again: worth its own word in the log.
        kind = "replay refused" if isinstance(e, CallTokenReplay) else "refused"
        app[CALLS].note_refused("call_token")
        logger.warning(f"call {_sid_for_log(call_sid)} {kind} at stream start: {e}")
        await ws.close(code=CLOSE_POLICY, message=str(e)[:120].encode())
        return ws
    info = _call_info(call_sid, stream_sid, account_sid, grant)

    personas = app[PERSONAS].current
    persona = personas.get(grant.persona) or personas.for_number(info.called)
    record = CallRecord(info.call_sid, info.stream_sid, persona.id)
    calls = app[CALLS]
    if not calls.register(record, require_reservation=app[AUTH].enforcing):
        logger.warning(f"call {info.call_sid} refused at stream start: at capacity or draining")
        await ws.close(code=CLOSE_TRY_AGAIN, message=b"server at capacity")
        return ws

    record.task = asyncio.current_task()
    with logger.contextualize(call_sid=info.call_sid, persona=persona.id):
        await _run_call(app, ws, persona, info, record, junk)
    return ws


async def _run_call(
    app: web.Application,
    ws: web.WebSocketResponse,
    persona: Any,
    info: CallInfo,
    record: CallRecord,
    junk: Counter[str],
) -> None:
    logger.info(f"call {info.call_sid} started: persona {persona.id}, model {persona.model}")
    call: CallPipeline | None = None
    try:
        variables = call_variables(
            persona, caller=info.caller, called=info.called, custom=info.custom
        )
        warm = claim_warm(app, info.call_sid)  # opened at its webhook (bot.warm_sessions)
        call = CallPipeline(persona, info, ws, app[RESOURCES], variables, warm)
        # The pipeline is built: freeze it while it waits its setup turn (with enough calls live).
        GC_POLICY.call_ready(len(app[CALLS]))
        record.abort = functools.partial(call.abort, close_code=1001)
        record.wrap_up = call.control.wrap_up
        record.live.attach(call)  # the calls page reads its state and open turn
        await call.run()
        record.end_reason = record.end_reason or call.end_reason
    except asyncio.CancelledError:
        record.end_reason = record.end_reason or "cancelled"
        if not ws.closed:
            await ws.close(code=1001, message=b"server shutting down")
        raise
    except Exception:
        logger.exception(f"call {info.call_sid} failed")
        record.end_reason = "internal error"
        if not ws.closed:
            await ws.close(code=1011, message=b"internal error")
    finally:
        if call is not None and call.rejection is not None:
            code, reason = call.rejection
            logger.error(explain_rejection(persona, code or 0, reason))
        bad = dict(junk)
        if call is not None:
            bad.update({k: v for k, v in call.serializer.bad_input.items() if v})
        extra = f", bad input {bad}" if bad else ""
        logger.info(
            f"call {info.call_sid} ended after {record.duration_secs:.1f} s: "
            f"{record.end_reason}{extra}"
        )
        record.bad_input = bad
        try:
            # One record, queued for the records writer and the persona's post-call webhook
            # (bot.records, bot.post_call): no I/O here.
            wants_hook = POST_CALL in app and persona.post_call_webhook is not None
            if RECORDS in app or wants_hook:
                summary = summary_of(
                    info,
                    persona.id,
                    record.duration_secs,
                    record.end_reason or "",
                    call,
                    bad,
                    app[SETTINGS].record_numbers,
                )
                if RECORDS in app:
                    app[RECORDS].submit(summary)
                if wants_hook:
                    app[POST_CALL].call_summarised(persona, summary)
        except Exception:  # a record that cannot be built must not keep the call's slot
            logger.exception(f"call {info.call_sid}: its record could not be made")
            if RECORDS in app:
                app[RECORDS].unrecorded()
            if POST_CALL in app:
                app[POST_CALL].unsent(persona)
        finally:
            app[CALLS].unregister(record)
            GC_POLICY.call_ended(len(app[CALLS]))
