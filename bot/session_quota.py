"""The Gemini concurrent-session quota as admission sees it: configured, learned, relaxed.

The Live API refuses a session over the project's concurrent-session quota at setup (close
1011 ``You exceeded your current quota ...``). A caller admitted then hears the TwiML apology
~0.1 s into the call; this module lets the webhook answer the busy TwiML instead.

The rule (``SessionQuota.admits``): a new call is admitted while

    sessions in use + handover reserve < limit

- *sessions in use*: the process's live calls plus the calls whose TwiML was just served
  (``CallRegistry.load()``): each holds, or is about to open, one Live API session.
- *handover reserve*: sessions kept free for live calls' connection handovers
  (``VOICEBOT_GEMINI_HANDOVER_RESERVE``, default 0). A handover that closes the old connection
  before it opens the next needs none; one that pre-opens the next connection needs one slot
  per concurrent handover, and the reserve keeps new callers from taking it.
- *limit*: the smaller of the configured limit (``VOICEBOT_GEMINI_MAX_SESSIONS``) and the
  learned one; no limit when neither is known.

Learning: a setup refused for quota sets the learned limit to the sessions the process held
then (its other live calls). It takes exactly one refused call to learn it when callers arrive
one after another; callers whose webhooks came before that first refusal came back were
already admitted, and each of them over the quota is refused too. The quota is shared with
other processes on the same key, so what is learned is this process's share at that moment.

Relaxing: while new callers are being turned away for the learned limit, it goes up by one
after a back-off (30 s, doubled after each refused probe up to 10 min, back to 30 s after a
probe that was not refused; all scaled by ``VOICEBOT_TIME_SCALE``), so one more call is let
through as a probe: refused, and the limit is learned again; served, and a raised quota is
found one call at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from loguru import logger

BACKOFF_SECS = 30.0
MAX_BACKOFF_SECS = 600.0


class SessionQuota:
    """What the webhook knows of the Gemini concurrent-session limit.

    Args:
        configured: A limit set by the operator (``VOICEBOT_GEMINI_MAX_SESSIONS``), or None.
        handover_reserve: Sessions kept free for live calls' handovers (see the module doc).
        time_scale: Multiplies the back-off (tests and demos).
        clock: Monotonic clock, injectable for tests.
    """

    def __init__(
        self,
        configured: int | None = None,
        *,
        handover_reserve: int = 0,
        time_scale: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.configured = configured
        self.handover_reserve = handover_reserve
        self.learned: int | None = None
        self.refusals = 0
        self._scale = time_scale
        self._clock = clock
        self._backoff = BACKOFF_SECS * time_scale
        self._probe_at: float | None = None
        self._probing = False
        self._turned_away = False

    @property
    def limit(self) -> int | None:
        """Sessions this process may hold now (None: no limit known)."""
        known = [n for n in (self.configured, self.learned) if n is not None]
        return min(known) if known else None

    def admits(self, in_use: int) -> bool:
        """Whether one more call may be admitted with ``in_use`` sessions held or promised."""
        self._relax()
        limit = self.limit
        if limit is None or in_use + self.handover_reserve < limit:
            return True
        if self.learned is not None and self.learned == limit:
            self._turned_away = True  # demand above the learned limit: worth a probe later
        return False

    def refused(self, held: int) -> None:
        """A setup was refused for quota while the process held ``held`` other sessions."""
        self.refusals += 1
        if self._probing:
            self._backoff = min(self._backoff * 2, MAX_BACKOFF_SECS * self._scale)
        self._probing = False
        self.learned = max(0, held)
        self._probe_at = self._clock() + self._backoff
        self._turned_away = False
        logger.warning(
            f"Gemini refused a session for quota with {held} session(s) held by this process: "
            f"new callers over {self.learned} get the busy TwiML; a probe call in "
            f"{self._backoff:g} s"
        )

    def _relax(self) -> None:
        if self.learned is None or self._probe_at is None:
            return
        if self._clock() < self._probe_at:
            return
        if not self._turned_away:
            return  # no caller was turned away: no need to probe yet
        if self._probing:  # the last probe was not refused within a back-off: served
            self._backoff = BACKOFF_SECS * self._scale
        self.learned += 1
        self._probing = True
        self._turned_away = False
        self._probe_at = self._clock() + self._backoff
        logger.info(f"Gemini session limit relaxed to {self.learned}: probing for a raised quota")

    def describe(self) -> dict[str, int | None]:
        """For ``/readyz``: the limit in force and how it was found."""
        return {
            "session_limit": self.limit,
            "session_limit_configured": self.configured,
            "session_limit_learned": self.learned,
            "quota_refusals": self.refusals,
        }
