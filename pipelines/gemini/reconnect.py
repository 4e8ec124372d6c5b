"""Reconnecting a dropped Live API connection within a time budget, and the gap the caller hears.

``connection.LiveConnection`` reconnects after an unplanned end (1011, a network drop, a
reconnect the service refuses) at once, then with backoff and jitter (``backoff_secs``), for as
long as ``ReconnectBudget`` allows: ``RECONNECT_BUDGET_SECS`` from the first failure of an
outage, not a count of failures (three quick 1011s are not a reason to end a call that a fourth
attempt would save). A connection that stayed up ``STABLE_SECS`` starts the next outage with a
full budget. Both are multiplied by the server's time scale.

``GapWatch`` notices when the caller can hear the outage: ``GAP_SECS`` (scaled) without a live
connection calls ``on_gap`` once per outage (the call's watchdog says a holding phrase).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

from google.genai.errors import APIError
from loguru import logger

# Close codes the Live API uses for setups and requests that will never succeed as sent.
PERMANENT_CLOSE_CODES = frozenset({1007, 1008})
# Reconnect time budget per outage; a connection up STABLE_SECS restores it (both scaled).
RECONNECT_BUDGET_SECS = 20.0
STABLE_SECS = 10.0
# Reconnect backoff after the first (immediate) retry: base * 2^(n-2), capped, with jitter.
BACKOFF_BASE_SECS = 0.2
BACKOFF_MAX_SECS = 2.0
# No live connection this long (scaled) is a gap the caller hears.
GAP_SECS = 1.0

GapCallback = Callable[[float], Awaitable[None]]
# Jitter has its own generator: the process's global one is the host's (tests seed it).
_JITTER = random.Random()


def backoff_secs(failures: int, rng: random.Random | None = None) -> float:
    """The wait before reconnect attempt ``failures`` (1-based): 0 first, then jittered."""
    if failures <= 1:
        return 0.0
    base = min(BACKOFF_MAX_SECS, BACKOFF_BASE_SECS * 2 ** (failures - 2))
    return base * (0.5 + 0.5 * (rng or _JITTER).random())


def close_code(error: Exception) -> int | None:
    """The close code of an SDK error (``APIError.code``), else None."""
    return error.code if isinstance(error, APIError) else None


def refusal(error: Exception) -> tuple[int | None, str]:
    """``(close code, reason)`` of a connection that could not be opened or ended."""
    if isinstance(error, APIError):
        return error.code, str(error.details or error.message or error)[:300]
    return None, f"Live API connection failed: {error!r}"[:200]


# How a quota refusal reads (the Live API's close reason; RESOURCE_EXHAUSTED in other APIs).
QUOTA_MARKERS = ("quota", "resource_exhausted", "resource exhausted")


def is_quota_refusal(code: int | None, reason: str) -> bool:
    """Whether a Live API close (code, reason) says the concurrent-session quota is used up."""
    text = reason.lower()
    return code in (None, 1008, 1011, 1013) and any(m in text for m in QUOTA_MARKERS)


class ReconnectBudget:
    """The reconnect time budget of one call (see the module docstring).

    Args:
        time_scale: Multiplies the budget and the stable time.
    """

    def __init__(self, time_scale: float = 1.0) -> None:
        self.secs = RECONNECT_BUDGET_SECS * time_scale
        self._stable = STABLE_SECS * time_scale
        self._outage_at: float | None = None
        self.attempt = 0

    def failed(self, now: float, opened_at: float | None) -> float:
        """A connection ended unplanned (``opened_at`` None: it never opened); seconds spent."""
        if opened_at is not None and now - opened_at >= self._stable:
            self._outage_at = None
        if self._outage_at is None:
            self._outage_at, self.attempt = now, 0
        self.attempt += 1
        return now - self._outage_at

    def wait_secs(self, spent: float) -> float:
        """The backoff before the next attempt, never past the budget."""
        return min(backoff_secs(self.attempt), max(0.0, self.secs - spent))


class GapWatch:
    """Calls ``on_gap`` once per outage that lasts ``GAP_SECS`` (scaled).

    Args:
        time_scale: Multiplies ``GAP_SECS``.
        over: True once the call failed or is closing (no more calls then).
    """

    def __init__(self, time_scale: float, over: Callable[[], bool]) -> None:
        self._secs = GAP_SECS * time_scale
        self._over = over
        self.offline_since: float | None = None
        self.on_gap: GapCallback | None = None
        self._task: asyncio.Task[None] | None = None

    def offline(self) -> None:
        """The live connection ended (idempotent within an outage)."""
        if self.offline_since is not None or self._over():
            return
        self.offline_since = time.monotonic()
        self._task = asyncio.create_task(self._later(), name="gemini-live-gap")

    def online(self) -> None:
        """A connection is live again: the outage is over."""
        self.offline_since = None
        self.stop()

    def stop(self) -> None:
        """Cancel a pending ``on_gap``."""
        task, self._task = self._task, None
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()

    async def _later(self) -> None:
        await asyncio.sleep(self._secs)
        since, callback = self.offline_since, self.on_gap
        if since is None or callback is None or self._over():
            return
        try:
            await callback(time.monotonic() - since)
        except Exception as e:
            logger.exception(f"on_gap handler failed: {e!r}")
