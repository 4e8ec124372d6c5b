"""``GET /twilio/media``: the Media Stream WebSocket; one call per connection.

Before the pipeline starts, the handler reads Twilio's ``connected`` and ``start`` messages
itself (Pipecat's serializer ignores ``start``). Answers to bad input in this phase:

| input before ``start``           | answer                                                   |
|----------------------------------|----------------------------------------------------------|
| text that is not JSON, binary    | ignored and counted (at most 20, then closed 1008)       |
| unknown event                    | ignored and counted                                      |
| ``media`` / ``dtmf`` / ``mark``  | closed 1008 "protocol error: '<event>' before 'start'"   |
| ``start`` without stream/call SID| closed 1008 "protocol error: 'start' lacks …"            |
| bad or missing ``call_token``    | closed 1008 (only when signatures are enforced)          |
| no ``start`` within 10 s         | closed 1008 "protocol error: no 'start' within 10 s"     |
| ``stop`` or socket closed        | nothing opened; ends quietly                             |

After ``start``, the pipeline's serializer answers bad input (see ``pipelines/twilio/serializer``).
No Gemini session is opened for a connection that does not pass this phase.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections import Counter
from typing import Any

from aiohttp import WSMsgType, web
from loguru import logger

from bot.app_keys import AUTH, CALLS, PERSONAS, RESOURCES
from bot.calls import CallRecord
from bot.gc_policy import GC_POLICY
from pipelines.call.pipeline import CallInfo, CallPipeline
from pipelines.personas import call_variables, explain_rejection

MAX_MESSAGE_BYTES = 64 * 1024
START_TIMEOUT_SECS = 10.0
MAX_JUNK_BEFORE_START = 20
CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN = 1013


class ProtocolError(Exception):
    """The peer broke the Media Streams protocol before the call started."""


async def _read_start(ws: web.WebSocketResponse, junk: Counter[str]) -> dict[str, Any] | None:
    """Read up to Twilio's ``start`` message; ``None`` if the peer left first."""
    deadline = time.monotonic() + START_TIMEOUT_SECS
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ProtocolError(f"no 'start' within {START_TIMEOUT_SECS:.0f} s")
        try:
            msg = await ws.receive(timeout=remaining)
        except TimeoutError:
            raise ProtocolError(f"no 'start' within {START_TIMEOUT_SECS:.0f} s") from None
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return None
        if sum(junk.values()) >= MAX_JUNK_BEFORE_START:
            raise ProtocolError("too many invalid messages before 'start'")
        if msg.type != WSMsgType.TEXT:
            junk["binary"] += 1
            continue
        try:
            data = json.loads(msg.data)
        except ValueError:
            junk["invalid_json"] += 1
            continue
        event = data.get("event") if isinstance(data, dict) else None
        if event == "connected":
            continue
        if event == "start":
            return data
        if event == "stop":
            return None
        if event in ("media", "dtmf", "mark"):
            raise ProtocolError(f"'{event}' before 'start'")
        junk["unknown_event"] += 1


def _call_info(start: dict[str, Any]) -> CallInfo:
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
    custom = {str(k): str(v) for k, v in custom.items()}
    return CallInfo(
        call_sid=call_sid,
        stream_sid=stream_sid,
        account_sid=str(body.get("accountSid") or ""),
        caller=custom.get("from", ""),
        called=custom.get("to", ""),
        custom=custom,
    )


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
        start = await _read_start(ws, junk)
        if start is None:
            return ws
        info = _call_info(start)
        if not app[AUTH].check_call_token(info.call_sid, info.custom.get("call_token")):
            raise ProtocolError("invalid call_token parameter")
    except ProtocolError as e:
        logger.warning(f"media stream closed: protocol error: {e}")
        await ws.close(code=CLOSE_POLICY, message=f"protocol error: {e}"[:120].encode())
        return ws

    personas = app[PERSONAS].current
    persona = personas.get(info.custom.get("persona", "")) or personas.for_number(info.called)
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
        call = CallPipeline(persona, info, ws, app[RESOURCES], variables)
        GC_POLICY.call_ready()  # the pipeline is built: freeze it while it waits its setup turn
        record.abort = functools.partial(call.abort, close_code=1001)
        record.wrap_up = call.control.wrap_up
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
        app[CALLS].unregister(record)
        GC_POLICY.call_ended(len(app[CALLS]))
