"""Twilio HTTP webhooks: ``POST /twilio/voice`` (TwiML) and ``/twilio/status``.

A caller the process cannot serve (at capacity, overloaded, draining, or over the Gemini
session limit) gets the busy TwiML here, before any stream is opened.
"""

from __future__ import annotations

from aiohttp import web
from loguru import logger
from twilio.twiml.voice_response import VoiceResponse

from bot.app_keys import AUTH, CALLS, PERSONAS
from bot.health import add_health_routes
from bot.settings import stream_url

APOLOGY = "Sorry, we are having trouble connecting your call. Please try again later."
BUSY = "Sorry, all our lines are busy right now. Please call again in a few minutes."


def busy_twiml() -> str:
    """TwiML for a call the server cannot take: a polite message, then hang up."""
    vr = VoiceResponse()
    vr.say(BUSY)
    vr.hangup()
    return str(vr)


def stream_twiml(url: str, parameters: dict[str, str]) -> str:
    """``<Connect><Stream>`` with ``<Parameter>``s, then the apology.

    Twilio plays the apology only if the stream ends abnormally: a normal bot hang-up ends the
    call through the REST API first.
    """
    vr = VoiceResponse()
    connect = vr.connect()
    stream = connect.stream(url=url)
    for name, value in parameters.items():
        stream.parameter(name=name, value=value[:499])
    vr.say(APOLOGY)
    vr.hangup()
    return str(vr)


async def voice(request: web.Request) -> web.Response:
    """Answer Twilio's incoming-call webhook with the TwiML that opens our media stream."""
    form = await request.post()
    params = {k: str(v) for k, v in form.items()}
    refusal = request.app[AUTH].check_webhook(request, params)
    if refusal:
        logger.warning(f"voice webhook refused: {refusal}")
        raise web.HTTPForbidden(text=f"Forbidden: {refusal}\n")
    call_sid = params.get("CallSid", "")
    if not call_sid:
        raise web.HTTPBadRequest(text="Bad request: the form has no CallSid\n")

    personas = request.app[PERSONAS].current
    wanted = request.query.get("persona")
    if wanted:
        persona = personas.get(wanted)
        if persona is None:
            raise web.HTTPNotFound(text=f"Not found: no persona {wanted!r}\n")
    else:
        persona = personas.for_number(params.get("To"))

    if not request.app[CALLS].reserve(call_sid):
        logger.warning(f"call {call_sid} refused: at capacity, draining or over the quota")
        return web.Response(text=busy_twiml(), content_type="text/xml")

    auth = request.app[AUTH]
    url = stream_url(auth.public_base(request))
    parameters = {
        "persona": persona.id,
        "from": params.get("From", ""),
        "to": params.get("To", ""),
        "call_token": auth.call_token(call_sid),
    }
    return web.Response(text=stream_twiml(url, parameters), content_type="text/xml")


async def status(request: web.Request) -> web.Response:
    """Accept Twilio's call and stream status callbacks (signed like every webhook)."""
    form = await request.post()
    params = {k: str(v) for k, v in form.items()}
    refusal = request.app[AUTH].check_webhook(request, params)
    if refusal:
        raise web.HTTPForbidden(text=f"Forbidden: {refusal}\n")
    logger.debug(
        f"status callback: call {params.get('CallSid', '?')} "
        f"{params.get('CallStatus') or params.get('StreamEvent', '?')}"
    )
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    """Register the webhook routes and the health endpoints (``bot.health``)."""
    app.router.add_post("/twilio/voice", voice)
    app.router.add_post("/twilio/status", status)
    add_health_routes(app)
