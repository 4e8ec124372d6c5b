"""Dead air: the silences the simulated caller sat through that it did not cause.

A caller in trouble does not feel frame gaps or underruns; it feels the seconds it spends waiting
for the bot with nothing to hear. :class:`DeadAirTracker` measures them from the caller's side,
sans-IO (the caller core passes every event in with its time). A wait opens when:

- the stream started and no greeting has been heard yet (``greeting``);
- the caller's utterance ended (a question or a barge-in: the caller is owed a reply, ``reply``);
- audible bot audio stopped and more bot audio (of the same reply, or a holding phrase) followed
  before the caller spoke again (``mid-reply``: a stall, a reconnect, a handover gap).

It closes at the next audible bot audio *heard* (after the phone's playout delay, as the other
latencies), or when the caller starts speaking again (an owed wait still counts up to then; a
mid-reply silence the caller spoke into does not count: from the caller's side the reply was
over), or at the call's end if the caller was still waiting then (an owed reply or greeting, or a
mid-reply silence while the caller's step was still waiting for the bot).

Silence the caller chose is not dead air: once the bot has gone quiet and nothing is owed, a
``pause`` step makes the silence the caller's until bot audio comes again or the caller speaks.
Waits shorter than :data:`DEAD_AIR_MIN_SECS` (word and sentence pauses) are not listed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DEAD_AIR_MIN_SECS = 0.3
"""Waits shorter than this are not listed (the pauses between a bot's words and sentences)."""


@dataclass
class DeadAir:
    """One wait the caller sat through.

    From ``t`` (seconds after the webhook POST started, as the timeline) for ``secs``; ``kind``
    is ``greeting``, ``reply`` or ``mid-reply``; ``until`` says what ended it: ``audio`` (bot
    audio heard), ``caller`` (the caller spoke) or ``end`` (the call ended).
    """

    t: float
    secs: float
    kind: str
    until: str


class DeadAirTracker:
    """Collects the caller's :class:`DeadAir` waits; every time is the driver's clock.

    Args:
        t0: the timeline's zero (the webhook POST start).
    """

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.waits: list[DeadAir] = []
        self._owed: tuple[float, str] | None = None  # (since, kind) of a greeting/reply owed
        self._speaking = False
        self._bot_spoke = False  # audible bot audio heard since the caller last spoke
        self._by_choice = False  # the caller chose to stay quiet after the bot finished

    @property
    def longest_secs(self) -> float:
        """The longest wait (0.0 when none)."""
        return max((w.secs for w in self.waits), default=0.0)

    def _add(self, start: float, end: float, kind: str, until: str) -> DeadAir | None:
        if end - start < DEAD_AIR_MIN_SECS:
            return None
        w = DeadAir(round(start - self.t0, 4), round(end - start, 4), kind, until)
        self.waits.append(w)
        return w

    def call_started(self, now: float) -> None:
        """The stream started: the caller waits for the greeting."""
        self._owed = (now, "greeting")

    def caller_speaks(self, now: float, bot_audible_until: float) -> DeadAir | None:
        """The caller started an utterance: an owed wait counts up to ``now``."""
        w = None
        if self._owed is not None:
            since, kind = self._owed
            w = self._add(max(since, bot_audible_until), now, kind, "caller")
        self._owed = None
        self._speaking = True
        self._bot_spoke = False
        self._by_choice = False
        return w

    def caller_stopped(self, now: float) -> None:
        """The caller's utterance ended: it is owed a reply from ``now``."""
        self._speaking = False
        self._owed = (now, "reply")
        self._by_choice = False

    def caller_pauses(self, now: float, bot_audible_until: float) -> None:
        """A ``pause`` step began: the silence is the caller's if the bot had finished."""
        if self._owed is None and not self._speaking and bot_audible_until <= now:
            self._by_choice = True

    def bot_audio(self, heard_at: float, bot_audible_until: float) -> DeadAir | None:
        """Audible bot audio that plays from ``heard_at``.

        ``bot_audible_until`` is when the audible audio queued before it stops playing (``-inf``
        when none).
        """
        w = None
        if self._speaking:
            pass  # the caller is talking: bot audio over it is not a silence
        elif self._owed is not None:
            since, kind = self._owed
            w = self._add(max(since, bot_audible_until), heard_at, kind, "audio")
            self._owed = None
        elif self._bot_spoke and not self._by_choice and bot_audible_until > -math.inf:
            w = self._add(bot_audible_until, heard_at, "mid-reply", "audio")
        self._bot_spoke = not self._speaking
        self._by_choice = False
        return w

    def call_ended(self, end: float, bot_audible_until: float, waiting: bool) -> DeadAir | None:
        """The call ended at ``end``; ``waiting``: the caller's step was waiting for the bot."""
        w = None
        if self._speaking:
            pass
        elif self._owed is not None:
            since, kind = self._owed
            w = self._add(max(since, bot_audible_until), end, kind, "end")
        elif waiting and self._bot_spoke and not self._by_choice:
            w = self._add(bot_audible_until, end, "mid-reply", "end")
        self._owed = None
        self._bot_spoke = False
        return w
