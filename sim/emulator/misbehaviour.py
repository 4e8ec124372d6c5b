"""The real model's misbehaviour on demand: missed barge-ins, phantom interruptions, freezes.

Also empty turns.

Each is a `--fault` key whose value is a probability (``missed_bargein=0.3``: each chance is
taken with that probability) or a caller turn (``missed_bargein=turn:2``: only during the reply
to the caller's second turn). Draws come from a per-session RNG seeded with the fault plan's
``seed`` and the session id, so a test sees the same misbehaviour on every run.

What the public reports describe (python-genai #1987, #2333, #2117; gemini-live-api-examples
#48, #52), and what the emulator does:

- **Missed barge-in**: caller speech during a reply does not interrupt it; the reply plays to
  its end, then the caller's turn is answered.
- **Phantom interruption**: ``interrupted`` then ``turnComplete`` in the middle of a reply
  (after ``PHANTOM_AFTER_SECS`` of its audio) while nobody spoke.
- **Freeze after an interruption**: after ``interrupted`` the model answers nothing more on
  that connection, as cookbook #1228 and livekit #4484 describe ("the WebSocket remains open,
  no error is returned", "the agent just hangs"): caller turns, text and ``clientContent`` go
  unanswered. Only a new connection (a resumed session) answers again.
- **Empty turn**: a caller turn is answered with ``turnComplete`` and nothing before it.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from loguru import logger

if TYPE_CHECKING:
    from sim.emulator.session import LiveSession

MISBEHAVIOURS = ("missed_bargein", "phantom_interrupt", "freeze_after_interrupt", "empty_turn")
# A phantom interruption comes after this much of the reply's audio was sent.
PHANTOM_AFTER_SECS = 1.0
POLL_SECS = 0.02


@dataclass(frozen=True)
class Trigger:
    """When a misbehaviour happens: with a probability, or in the reply to one caller turn.

    Attributes:
        probability: Chance per opportunity (0 never, 1 always); ignored when ``turn`` is set.
        turn: 1-based caller turn during whose reply (or, for ``empty_turn``, as whose reply)
            it happens, once.
    """

    probability: float = 0.0
    turn: int | None = None

    @property
    def enabled(self) -> bool:
        """Whether it can ever happen."""
        return self.turn is not None or self.probability > 0


def parse_trigger(key: str, raw: str) -> Trigger:
    """``0.3`` -> probability 0.3; ``turn:2`` -> the reply to caller turn 2; empty -> never.

    Raises:
        ValueError: The value is neither, with the expected forms.
    """
    text = raw.strip().lower()
    if not text:
        return Trigger()
    try:
        if text.startswith("turn:"):
            turn = int(text.removeprefix("turn:"))
            if turn >= 1:
                return Trigger(turn=turn)
        else:
            probability = float(text)
            if 0.0 <= probability <= 1.0:
                return Trigger(probability=probability)
    except ValueError:
        pass
    raise ValueError(
        f"--fault {key}={raw!r}: expected a probability from 0 to 1 (e.g. {key}=0.3) or a "
        f"caller turn (e.g. {key}=turn:2)"
    )


class Misbehaviour:
    """One session's draws for the misbehaviour faults.

    Args:
        specs: Fault key -> value as given (``"0.3"``, ``"turn:2"`` or ``""``).
        seed: The fault plan's seed.
        session_id: Mixed into the seed, so sessions draw independently but reproducibly.

    Raises:
        ValueError: A value does not parse (see `parse_trigger`).
    """

    def __init__(self, specs: dict[str, str], seed: int, session_id: str) -> None:
        self._triggers = {key: parse_trigger(key, specs.get(key, "")) for key in MISBEHAVIOURS}
        self.active = any(t.enabled for t in self._triggers.values())
        self._rng = random.Random(f"{seed}/{session_id}")
        self.frozen = False

    def happens(self, key: str, caller_turn: int) -> bool:
        """Whether misbehaviour ``key`` happens now, in the reply to ``caller_turn``."""
        trigger = self._triggers[key]
        if trigger.turn is not None:
            return trigger.turn == caller_turn
        return trigger.probability > 0 and self._rng.random() < trigger.probability


async def phantom_interrupt(session: LiveSession, reply: asyncio.Task[None]) -> None:
    """Interrupt ``reply`` once ``PHANTOM_AFTER_SECS`` of it were sent, with no caller speech."""
    while not reply.done() and session.close_code is None:
        # ``_sent_secs`` still holds the previous reply's figure until this one streams.
        streaming = session._reply_task is reply and session._streaming
        if streaming and session._sent_secs >= PHANTOM_AFTER_SECS:
            logger.debug("emulator {}: fault: phantom interruption", session.id)
            await session._barge_in(force=True, cancel_tools=False)
            return
        await asyncio.sleep(POLL_SECS)
