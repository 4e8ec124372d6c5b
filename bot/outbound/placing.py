"""An outbound call request, its checks, and the Twilio ``Calls.json`` form it becomes.

The call's ``Url`` is our own voice webhook with ``?persona=ID`` and the dial's parameters in
the query: the webhook then serves that persona and signs the parameters into the call's
``call_token`` like an inbound call's (only parameters the persona declares in
``custom_parameters`` are taken, so a dial naming another one is refused here, not silently
dropped). Answering-machine detection is synchronous (``MachineDetection`` without
``AsyncAmd``): Twilio fetches the webhook only once it knows who answered and says so in
``AnsweredBy`` (``bot.outbound.answer``), so the bot never greets a machine, nor anyone
before they picked up. ``DetectMessageEnd`` when the persona leaves a message (the webhook then
comes after the beep), ``Enable`` when it hangs up on machines.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from pipelines.personas import Persona, PersonaSet
from pipelines.personas.quoting import E164

STATUS_PATH = "/twilio/outbound/status"
VOICE_PATH = "/twilio/voice"
STATUS_EVENTS = ("initiated", "ringing", "answered", "completed")
FINAL_STATUSES = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
MAX_PARAM_CHARS = 100  # what a ${custom.X} keeps (pipelines.personas.quoting)


class DialError(ValueError):
    """A dial request that cannot be placed; the message says what, expected vs got, the fix."""


@dataclass(frozen=True)
class DialRequest:
    """What to dial.

    Attributes:
        to: The number to call, E.164.
        persona: The persona id that talks.
        from_: Our caller ID, E.164 (a number of the Twilio account); None: the persona's
            first ``numbers`` entry.
        params: Values of the persona's declared ``custom_parameters``.
    """

    to: str
    persona: str
    from_: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)


def check_number(value: object, what: str) -> str:
    """``value`` if it is an E.164 number, else a DialError naming ``what``."""
    if not isinstance(value, str) or not E164.fullmatch(value):
        raise DialError(
            f"{what}: got {value!r}, expected an E.164 number such as '+15551230000' "
            "(a '+', the country code and the number, digits only)"
        )
    return value


def check_request(request: DialRequest, personas: PersonaSet) -> tuple[Persona, str]:
    """The persona and caller ID of a valid request.

    Raises:
        DialError: a bad number, an unknown persona, no caller ID, an undeclared parameter.
    """
    check_number(request.to, "to")
    persona = personas.get(request.persona)
    if persona is None:
        known = ", ".join(sorted(personas.personas)) or "none"
        raise DialError(
            f"persona: got {request.persona!r}, expected one of the loaded personas ({known})"
        )
    from_ = request.from_ or (persona.numbers[0] if persona.numbers else None)
    if from_ is None:
        raise DialError(
            f"from: none given and persona {persona.id!r} has no numbers; pass --from / "
            '"from" with a number of your Twilio account'
        )
    check_number(from_, "from")
    declared = persona.custom_parameters
    for name, value in request.params.items():
        if name not in declared:
            names = ", ".join(sorted(declared)) or "none"
            raise DialError(
                f"param {name!r}: persona {persona.id!r} does not declare it (its "
                f"custom_parameters: {names}); declare it in the persona or drop it"
            )
        if not isinstance(value, str) or len(value) > MAX_PARAM_CHARS:
            raise DialError(
                f"param {name!r}: expected text of at most {MAX_PARAM_CHARS} characters"
            )
    return persona, from_


def call_form(
    request: DialRequest, persona: Persona, from_: str, public_url: str
) -> list[tuple[str, str]]:
    """The ``POST Calls.json`` form (pairs: ``StatusCallbackEvent`` repeats)."""
    base = public_url.rstrip("/")
    query = urlencode({"persona": persona.id, **request.params})
    status_query = urlencode({"persona": persona.id})
    outbound = persona.outbound
    form = [
        ("To", request.to),
        ("From", from_),
        ("Url", f"{base}{VOICE_PATH}?{query}"),
        ("Method", "POST"),
        ("StatusCallback", f"{base}{STATUS_PATH}?{status_query}"),
        ("StatusCallbackMethod", "POST"),
        *(("StatusCallbackEvent", event) for event in STATUS_EVENTS),
        ("MachineDetection", outbound.machine_detection),
        ("MachineDetectionTimeout", str(outbound.amd_timeout_secs)),
        ("Timeout", str(outbound.ring_timeout_secs)),
    ]
    return form


def need_public_url(public_url: str | None) -> str:
    """``PUBLIC_URL``, which Twilio must reach for the webhook and status callbacks."""
    if not public_url:
        raise DialError(
            "PUBLIC_URL is not set: Twilio fetches the call's TwiML and posts its status "
            "there; set PUBLIC_URL=https://bot.example.com (the server's public base URL)"
        )
    return public_url


def summary(call: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of Twilio's call resource a dial reports."""
    return {k: call.get(k) for k in ("sid", "status", "to", "from", "answered_by")}
