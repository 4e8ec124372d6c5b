"""``POST /calls`` on the operations listener: place an outbound call over HTTP.

On the operations listener, not the public one: placing a call spends money and reaches a
stranger's phone, so it sits behind the same bearer token as ``/stats`` (``VOICEBOT_OPS_TOKEN``,
required whenever the listener is reachable from outside) and never on the port Twilio and the
internet reach. The body is JSON::

    {"to": "+15551230000", "persona": "receptionist", "from": "+15551230001",
     "params": {"campaign": "spring"}}

Answers: 201 with Twilio's call (``sid``, ``status``, …); 400 with ``{"error": …}`` saying
what is wrong (number, persona, parameter, body); 502 with Twilio's error (code, message,
more_info) when Twilio refused; 503 when this server cannot place calls (no Twilio
credentials, no ``PUBLIC_URL``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from loguru import logger

from bot.app_keys import PERSONAS, RESOURCES, SETTINGS
from bot.outbound.placing import (
    DialError,
    DialRequest,
    call_form,
    check_number,
    check_request,
    need_public_url,
    summary,
)
from bot.twilio_rest import TwilioApiError, TwilioRest, TwilioRestError

OUTBOUND_PUBLIC_APP: web.AppKey[web.Application] = web.AppKey("outbound_public_app")
EXAMPLE = '{"to": "+15551230000", "persona": "receptionist", "params": {"k": "v"}}'


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def parse_body(body: object) -> DialRequest:
    """The request in a decoded JSON body.

    Raises:
        DialError: not an object, or a field of the wrong type.
    """
    if not isinstance(body, dict):
        raise DialError(f"body: expected a JSON object such as {EXAMPLE}")
    unknown = sorted(set(body) - {"to", "persona", "from", "params"})
    if unknown:
        raise DialError(f"body: unknown field(s) {', '.join(unknown)}; expected {EXAMPLE}")
    params = body.get("params") or {}
    if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
        raise DialError('params: expected an object of text values, e.g. {"campaign": "spring"}')
    persona = body.get("persona")
    if not isinstance(persona, str) or not persona:
        raise DialError(f"persona: got {persona!r}, expected a persona id")
    from_ = body.get("from")
    if from_ is not None and not isinstance(from_, str):
        raise DialError(f"from: got {from_!r}, expected an E.164 number or no field")
    to = check_number(body.get("to"), "to")
    return DialRequest(to=to, persona=persona, from_=from_, params=params)


async def post_call(request: web.Request) -> web.Response:
    """Place one outbound call (see the module docstring)."""
    public = request.app[OUTBOUND_PUBLIC_APP]
    try:
        body = await request.json()
    except ValueError:
        return _error(400, f"body: not JSON; expected {EXAMPLE}")
    try:
        dial = parse_body(body)
        persona, from_ = check_request(dial, public[PERSONAS].current)
    except DialError as e:
        return _error(400, str(e))
    settings = public[SETTINGS]
    rest = public[RESOURCES].rest if RESOURCES in public else None
    if not isinstance(rest, TwilioRest):
        return _error(503, "this server has no Twilio REST credentials: set TWILIO_ACCOUNT_SID "
                      "and TWILIO_AUTH_TOKEN")  # fmt: skip
    try:
        form = call_form(dial, persona, from_, need_public_url(settings.public_url))
    except DialError as e:
        return _error(503, str(e))
    try:
        call = await rest.create_call(form)
    except TwilioApiError as e:
        logger.warning(f"outbound call refused by Twilio: HTTP {e.status}, error {e.code}")
        return _error(
            502, str(e), twilio={"status": e.status, "code": e.code, "message": e.message,
                                 "more_info": e.more_info},
        )  # fmt: skip
    except TwilioRestError as e:
        logger.warning(f"outbound call not placed: {e}")
        return _error(502, str(e))
    logger.info(f"outbound call {call.get('sid', '?')} placed (persona {persona.id})")
    return web.json_response(summary(call), status=201)


def add_outbound_api(ops: web.Application, public: web.Application) -> None:
    """Register ``POST /calls`` on the operations application, serving ``public``'s calls."""
    ops[OUTBOUND_PUBLIC_APP] = public
    ops.router.add_post("/calls", post_call)
