"""The voice webhook's answer to an outbound call that a machine (or a fax) picked up.

With synchronous answering-machine detection Twilio's webhook carries ``AnsweredBy``:
``human`` and ``unknown`` get the normal stream (the persona greets a person), a machine gets
what the persona's ``outbound.on_machine`` says: ``<Hangup/>``, or its ``machine_message`` in a
``<Say>`` with the persona's ``<Say>`` voice and language (``texts.say_voice``,
``texts.say_language``), then ``<Hangup/>`` (Twilio's text-to-speech, word for word: a
voicemail is a message to leave, not a conversation, and no Gemini session is spent on a
machine). An inbound call has no ``AnsweredBy`` and is not touched.
"""

from __future__ import annotations

from collections.abc import Mapping

from loguru import logger
from twilio.twiml.voice_response import VoiceResponse

from pipelines.personas import Persona

MACHINE = frozenset(
    {"machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "fax"}
)
PERSON = frozenset({"human", "unknown"})


def machine_twiml(persona: Persona, params: Mapping[str, str]) -> str | None:
    """TwiML for a machine-answered outbound call; None for everything else (serve the stream)."""
    answered_by = params.get("AnsweredBy", "")
    if answered_by not in MACHINE:
        return None
    call_sid = params.get("CallSid", "?")
    vr = VoiceResponse()
    outbound = persona.outbound
    if answered_by != "fax" and outbound.on_machine == "leave_message" and outbound.machine_message:
        logger.info(f"outbound call {call_sid}: answered by {answered_by}; leaving the message")
        texts = persona.texts  # the persona's <Say> voice and language (personas/texts.py)
        vr.say(outbound.machine_message, voice=texts.say_voice, language=texts.say_language)
    else:
        logger.info(f"outbound call {call_sid}: answered by {answered_by}; hanging up")
    vr.hangup()
    return str(vr)


def remote_party_first(params: dict[str, str]) -> dict[str, str]:
    """The webhook form with ``From``/``To`` as seen from the bot's side of the call.

    On an outbound call (``Direction`` ``outbound-api``) Twilio's ``From`` is our own number
    and ``To`` the person we called; swapped here, so ``${caller}``, the records' ``caller``
    and everything else that means "the person on the line" is that person, as on an inbound
    call. An inbound form is returned as it is.
    """
    if not params.get("Direction", "").startswith("outbound"):
        return params
    return {**params, "From": params.get("To", ""), "To": params.get("From", "")}
