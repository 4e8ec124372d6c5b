"""The persona's ``outbound:`` section: what an outbound call does when a machine answers.

Outbound calls use Twilio's synchronous answering-machine detection (``bot.outbound``): Twilio
fetches the voice webhook only once detection is done and says who answered (``AnsweredBy``).
A person (or ``unknown``) gets the normal stream and the persona's greeting; a machine gets
what this section says: ``hang_up`` (``MachineDetection=Enable``, the fastest decision) or
``leave_message`` (``MachineDetection=DetectMessageEnd``: the webhook comes after the beep, and
``machine_message`` is spoken with ``<Say>`` in the persona's language, then the call ends).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipelines.personas.sections import _Strict

# Twilio's bounds for MachineDetectionTimeout (seconds; its default is 30) and Timeout
# (how long to let the line ring; 5-600, default 60).
AMD_TIMEOUT_RANGE = (3, 59)
RING_TIMEOUT_RANGE = (5, 600)


class Outbound(_Strict):
    """How the persona's outbound calls are placed and what a machine gets.

    Attributes:
        on_machine: ``hang_up`` (answer a machine with ``<Hangup/>``) or ``leave_message``
            (wait for the beep, then say ``machine_message``).
        machine_message: The voicemail, word for word (required for ``leave_message``).
        amd_timeout_secs: Twilio's ``MachineDetectionTimeout``: how long detection may take
            before it answers ``unknown`` (treated as a person).
        ring_timeout_secs: Twilio's ``Timeout``: how long the line rings before ``no-answer``.
    """

    on_machine: Literal["hang_up", "leave_message"] = "hang_up"
    machine_message: str | None = Field(default=None, min_length=1, max_length=1000)
    amd_timeout_secs: int = Field(default=30, ge=AMD_TIMEOUT_RANGE[0], le=AMD_TIMEOUT_RANGE[1])
    ring_timeout_secs: int = Field(default=30, ge=RING_TIMEOUT_RANGE[0], le=RING_TIMEOUT_RANGE[1])

    @model_validator(mode="after")
    def _message_for_leave_message(self) -> Outbound:
        if self.on_machine == "leave_message" and not self.machine_message:
            raise ValueError(
                "on_machine: got 'leave_message' without machine_message, expected the "
                'message to leave (machine_message: "Hi, this is …") or on_machine: hang_up'
            )
        return self

    @property
    def machine_detection(self) -> str:
        """Twilio's ``MachineDetection`` value for this behaviour."""
        return "DetectMessageEnd" if self.on_machine == "leave_message" else "Enable"
