"""How the simulated phone network treats each number, and the fake account's settings.

Defaults are Twilio's and a real line's: a phone rings about 4 s before a person picks up; a
person says "Hello?" (about 1 s) and waits; Twilio's detection calls that ``human`` once
``MachineDetectionSpeechEndThreshold`` (1.2 s) of silence followed; a voicemail greeting talks
for about 8 s then beeps, detected as ``machine_start`` after
``MachineDetectionSpeechThreshold`` (2.4 s) of unbroken speech with ``Enable``, or as
``machine_end_beep`` shortly after the beep with ``DetectMessageEnd``; a busy line answers
busy within about a second; an unanswered one rings until the call's ``Timeout``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from sim.caller.plan import CallPlan

Kind = Literal["person", "machine", "busy", "no-answer", "failed"]

RING_SECS = 4.0
HELLO_SECS = 1.0
SPEECH_END_THRESHOLD_SECS = 1.2  # Twilio's MachineDetectionSpeechEndThreshold default
SPEECH_THRESHOLD_SECS = 2.4  # Twilio's MachineDetectionSpeechThreshold default
MACHINE_GREETING_SECS = 8.0
BEEP_DETECT_SECS = 0.5  # the beep's end to Twilio's machine_end_beep
BUSY_SECS = 1.0
FAILED_SECS = 0.5
SAY_WORDS_PER_SEC = 2.5  # Twilio text-to-speech, about 150 words a minute
ACCOUNT_CPS = 1.0  # a Twilio account's default calls-per-second


def person_plan() -> CallPlan:
    """What a person does once the stream is up: hear the greeting, ask, hear the reply, hang up."""
    return CallPlan().wait_for_greeting().say("caller_question.wav").wait_for_reply().hangup()


@dataclass(frozen=True)
class NumberBehaviour:
    """What happens when a number is called.

    Attributes:
        kind: ``person``, ``machine``, ``busy``, ``no-answer`` or ``failed``.
        ring_secs: How long it rings before it is answered (person, machine).
        greeting_secs: A machine's greeting before its beep.
        plan: What a person does on the media stream (default :func:`person_plan`).
    """

    kind: Kind = "person"
    ring_secs: float = RING_SECS
    greeting_secs: float = MACHINE_GREETING_SECS
    plan: CallPlan | None = None


@dataclass
class FakeTwilioConfig:
    """The fake account and its phone network.

    Attributes:
        account_sid: The account SID requests must authenticate as.
        auth_token: Its auth token (basic-auth password; signs webhooks and callbacks).
        cps: The account's calls-per-second limit (create requests beyond it get 429/20429).
        numbers: Behaviour per called number; others get ``default``.
        default: Behaviour of numbers not listed.
        time_scale: Multiplies the network's waits (ringing, detection, greetings, ``<Say>``),
            for tests; the media stream stays real time. Not the CPS limit: a rate limit is
            the account's, set it with ``cps``.
        api_latency_secs: How long each REST request takes to answer (Twilio's API is
            typically 100-300 ms away).
    """

    account_sid: str = "AC" + "5" * 32
    auth_token: str = "fake-twilio-auth-token"
    cps: float = ACCOUNT_CPS
    numbers: Mapping[str, NumberBehaviour] = field(default_factory=dict)
    default: NumberBehaviour = NumberBehaviour()
    time_scale: float = 1.0
    api_latency_secs: float = 0.15

    def behaviour(self, number: str) -> NumberBehaviour:
        """The behaviour of ``number``."""
        return self.numbers.get(number, self.default)
