"""What the calls page shows of a live call: its state and its last transcript lines.

Each ``bot.calls.CallRecord`` carries a ``LiveView``. The call's journal hands it every turn
as it closes (``ProcessResources.turn_ended`` -> ``CallRegistry.turn_ended``), and it keeps
the last ``LIVE_LINES`` of them in a ring: a 30-minute call costs the same few lines as a
short one, and nothing is copied per audio chunk. The turn still open (the bot's answer being
played, the caller's sentence being transcribed) and the call's state are read from the
pipeline only when the page asks (``snapshot``), once a second per open page.

Words follow the persona's ``records: {transcript: …}``: a persona that keeps none shows the
turns' timing with empty text. Nothing here is logged.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any

from pipelines.ports import TranscriptTurn

if TYPE_CHECKING:
    from pipelines.call.pipeline import CallPipeline

# Transcript lines a live call keeps for the page (closed turns; the open one comes on top).
LIVE_LINES = 6


def turn_json(turn: TranscriptTurn, *, open_: bool = False) -> dict[str, Any]:
    """One transcript line as the page's JSON reads it."""
    return {
        "speaker": turn.speaker,
        "text": turn.text,
        "at_secs": turn.at_secs,
        "interrupted": turn.interrupted,
        "open": open_,
    }


class LiveView:
    """One live call's last transcript lines and state (see the module docstring).

    Args:
        max_lines: Closed turns kept.
    """

    def __init__(self, max_lines: int = LIVE_LINES) -> None:
        self.lines: deque[TranscriptTurn] = deque(maxlen=max_lines)
        self.started_wall = time.time()
        self._caller_heard = False
        self._call: CallPipeline | None = None

    def attach(self, call: CallPipeline) -> None:
        """The call's pipeline is built: its state and open turn can be read from now on."""
        self._call = call

    def turn_ended(self, turn: TranscriptTurn) -> None:
        """A turn of the call's transcript closed (kept in the ring)."""
        self.lines.append(turn)
        if turn.speaker == "caller":
            self._caller_heard = True

    def state(self) -> str:
        """``connecting``, ``greeting``, ``speaking``, ``listening``, ``handing over``, ``ending``.

        ``up`` when the pipeline is not built yet or its state cannot be told.
        """
        call = self._call
        if call is None:
            return "up"
        if call.control.ending:
            return "ending"
        if call.llm.connection.reconnecting:
            return "handing over"
        if call.setup_secs is None:
            return "connecting"
        speaking = call.journal.speaking
        if speaking == "bot":
            return "speaking" if self._caller_heard else "greeting"
        return "listening"

    def recent(self) -> list[dict[str, Any]]:
        """The closed lines, oldest first, then the open turn if it has words or audio."""
        out = [turn_json(t) for t in self.lines]
        current = self._call.journal.current() if self._call is not None else None
        if current is not None:
            out.append(turn_json(current, open_=True))
        return out
