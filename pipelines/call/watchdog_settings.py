"""What the model watchdog is configured with and waits for; what the model is told after.

``WatchdogSettings`` (the persona's ``watchdog:`` thresholds, scaled), ``Wait`` (what a
watch is waiting for) and the nudges sent once the watchdog's reconnect is live; the watchdog
itself is ``pipelines.call.watchdog``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from pipelines.call.turns import turn_end_lag_secs

# What the model is told after the watchdog's reconnect (see ``nudge``).
NUDGE_NO_REPLY = (
    "The connection dropped for a moment. Answer the caller's last words now, in the "
    "language of this call."
)
NUDGE_CUT_OFF = (
    "The connection dropped while you were answering. Briefly finish your last answer, in "
    "the language of this call, without repeating what you already said."
)


@dataclass(frozen=True)
class WatchdogSettings:
    """Thresholds in seconds (already scaled; see the module docstring)."""

    hold_after_secs: float = 3.0
    reconnect_after_secs: float = 8.0
    give_up_after_secs: float = 15.0
    turn_end_lag_secs: float = 0.0

    @classmethod
    def for_persona(cls, persona: Any, time_scale: float = 1.0) -> WatchdogSettings:
        """The persona's ``watchdog`` thresholds times ``time_scale``; the turn-end lag is real.

        A local turn ends ``stop_secs`` (the VAD's quiet) plus the turn strategy's speech
        timeout after the caller's last word; the silence is counted from that word, but at
        most half the holding delay is taken back, so the model always has the other half.
        """
        w = persona.watchdog
        lag = turn_end_lag_secs(persona)
        return cls(
            hold_after_secs=w.hold_after_secs * time_scale,
            reconnect_after_secs=w.reconnect_after_secs * time_scale,
            give_up_after_secs=w.give_up_after_secs * time_scale,
            turn_end_lag_secs=min(lag, w.hold_after_secs * time_scale / 2),
        )


class Wait(Enum):
    """What the watchdog is waiting for."""

    SETUP = "setupComplete"
    REPLY = "reply"
    RESUME = "more of the reply"
