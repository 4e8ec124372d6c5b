"""Twilio HTTP webhooks: ``POST /twilio/voice`` (TwiML) and ``/twilio/status``.

A caller the process cannot serve (at capacity, overloaded, draining, or over the Gemini
session limit) gets the busy TwiML here, before any stream is opened; when another process of
the deployment may have room, the webhook is first passed on with a ``<Redirect>`` to itself
(``?busy_hops=N``, up to ``VOICEBOT_BUSY_REDIRECTS`` times), which the load balancer sends to
another process. A caller that is served gets a TwiML whose ``call_token`` ``<Parameter>``
signs everything decided here (persona, From, To, custom parameters from the webhook URL's
query) for that call and stream only (``bot.call_tokens``).
"""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web
from loguru import logger
from twilio.twiml.voice_response import VoiceResponse

from bot.app_keys import AUTH, CALLS, PERSONAS, SETTINGS
from bot.call_tokens import MAX_TOKEN_CHARS, CallTokenTooLong
from bot.health import add_health_routes
from bot.outbound.answer import machine_twiml, remote_party_first
from bot.settings import stream_url
from bot.warm_sessions import prewarm
from pipelines.personas.texts import DEFAULTS as TEXT_DEFAULTS
from pipelines.personas.texts import Texts

# The English defaults; a call's words are its persona's ``texts`` (pipelines.personas.texts).
BUSY = TEXT_DEFAULTS["en"]["busy"]
# The webhook URL's query parameter counting the processes that passed a call on (``voice``).
BUSY_HOPS = "busy_hops"


def _say(vr: VoiceResponse, phrase: str, texts: Texts | None) -> None:
    """``<Say>`` a phrase of ``texts`` in its language and voice (None: the English default)."""
    if texts is None:
        vr.say(TEXT_DEFAULTS["en"][phrase])
    else:
        vr.say(texts.said(phrase), voice=texts.say_voice, language=texts.say_language)


def busy_twiml(texts: Texts | None = None) -> str:
    """TwiML for a call the server cannot take: a polite message, then hang up."""
    vr = VoiceResponse()
    _say(vr, "busy", texts)
    vr.hangup()
    return str(vr)


def busy_hops(request: web.Request) -> int:
    """How many processes already passed this webhook on (``?busy_hops=N``; 0 without it)."""
    raw = request.query.get(BUSY_HOPS, "0")
    if not raw.isascii() or not raw.isdigit() or len(raw) > 3:
        raise web.HTTPBadRequest(
            text=f"Bad request: {BUSY_HOPS} in the webhook URL's query: expected a whole "
            f"number of hops such as 1, got {raw[:20]!r}; remove it from the webhook URL\n"
        )
    return int(raw)


def busy_redirect_url(request: web.Request, base: str, hops: int) -> str:
    """This webhook's URL with ``busy_hops`` one more; its other query parameters kept.

    Twilio signs the full URL it requests, so the retry is signed like any webhook.
    """
    query = [(k, v) for k, v in request.query.items() if k != BUSY_HOPS]
    query.append((BUSY_HOPS, str(hops + 1)))
    return f"{base}{request.rel_url.raw_path}?{urlencode(query)}"


def redirect_twiml(url: str) -> str:
    """TwiML passing the call on: Twilio POSTs the same call parameters to ``url``."""
    vr = VoiceResponse()
    vr.redirect(url, method="POST")
    return str(vr)


def stream_twiml(url: str, parameters: dict[str, str], texts: Texts | None = None) -> str:
    """``<Connect><Stream>`` with ``<Parameter>``s, then the apology.

    Twilio plays the apology only if the stream ends abnormally: a normal bot hang-up ends the
    call through the REST API first. ``texts``: the persona's, for the words, voice, language.
    """
    vr = VoiceResponse()
    connect = vr.connect()
    stream = connect.stream(url=url)
    for name, value in parameters.items():
        if len(value) > MAX_TOKEN_CHARS:  # Twilio would cut it; a cut token is no token
            raise ValueError(
                f"<Parameter> {name!r} is {len(value)} characters, expected at most "
                f"{MAX_TOKEN_CHARS} (Twilio's limit)"
            )
        stream.parameter(name=name, value=value)
    _say(vr, "apology", texts)
    vr.hangup()
    return str(vr)


async def read_form(request: web.Request) -> dict[str, str]:
    """The webhook's form fields, or a 400 (never a traceback) for a body that is no form.

    A multipart body without its boundary, an unknown charset or bytes that are not UTF-8.
    """
    try:
        form = await request.post()
    except (ValueError, LookupError, AssertionError) as e:
        logger.warning(f"webhook {request.path} refused 400: the body is not a form ({e!r:.80})")
        raise web.HTTPBadRequest(text="Bad request: the body is not a valid form\n") from None
    return {k: str(v) for k, v in form.items()}


async def signed_form(request: web.Request) -> dict[str, str]:
    """The webhook's form fields once Twilio's signature over them is checked, else a 403.

    Every Twilio webhook (the voice webhook, call and stream status, outbound status) goes
    through here, so each refusal is one WARNING line naming the path and the reason.
    """
    params = await read_form(request)
    refusal = request.app[AUTH].check_webhook(request, params)
    if refusal:
        logger.warning(f"webhook {request.path} refused 403: {refusal}")
        raise web.HTTPForbidden(text=f"Forbidden: {refusal}\n")
    return params


async def voice(request: web.Request) -> web.Response:
    """Answer Twilio's incoming-call webhook with the TwiML that opens our media stream."""
    params = await signed_form(request)
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
    # An outbound call a machine answered (AnsweredBy) gets the persona's answer, no stream.
    if (machine := machine_twiml(persona, params)) is not None:
        return web.Response(text=machine, content_type="text/xml")
    params = remote_party_first(params)  # a call we placed: ${caller} is the person we called

    auth = request.app[AUTH]
    url = stream_url(auth.public_base(request))
    # The operator's webhook URL (signed by Twilio) may set the persona's declared ${custom.X}.
    custom = {k: v for k, v in request.query.items() if k in persona.custom_parameters}
    try:
        token = auth.issue_call_token(
            call_sid=call_sid, stream_url=url, persona=persona.id,
            caller=params.get("From", ""), called=params.get("To", ""), custom=custom,
        )  # fmt: skip
    except CallTokenTooLong as e:
        logger.error(f"voice webhook failed: {e}")
        raise web.HTTPInternalServerError(text=f"Server error: {e}\n") from None

    calls = request.app[CALLS]
    if (refusal := calls.admit(call_sid)) is not None:
        hops = busy_hops(request)
        if refusal.local and hops < (request.app[SETTINGS].busy_redirects or 0):
            # Another process may have room: the balancer sends the retried webhook elsewhere.
            calls.redirected(refusal)
            logger.info(f"call {call_sid} passed on: {refusal.detail} here (hop {hops + 1})")
            twiml = redirect_twiml(busy_redirect_url(request, auth.public_base(request), hops))
            return web.Response(text=twiml, content_type="text/xml")
        calls.refuse(call_sid, refusal)  # logs why
        return web.Response(text=busy_twiml(persona.texts), content_type="text/xml")

    # Open its Live API session while Twilio reads the TwiML and connects (bot.warm_sessions).
    prewarm(request.app, call_sid, persona, caller=params.get("From", ""),
            called=params.get("To", ""), custom=custom)  # fmt: skip
    # Only the token counts at the stream's start; `persona` is shown for people reading TwiML.
    parameters = {"persona": persona.id, "call_token": token}
    twiml = stream_twiml(url, parameters, persona.texts)
    return web.Response(text=twiml, content_type="text/xml")


async def status(request: web.Request) -> web.Response:
    """Accept Twilio's call and stream status callbacks (signed like every webhook)."""
    params = await signed_form(request)
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
