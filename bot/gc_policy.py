"""When the garbage collector may stop the event loop, and for how long.

A call's pipeline is ~1,900 garbage-collected objects that live as long as the call. Left to
CPython's generational collector, each of them is walked again by every full collection: at 150
calls that is ~300,000 objects and a 100 ms stall of every call on the process, about once a
minute under normal call churn, and young collections walk fresh pipelines during setup bursts
(30 ms measured for 20 new calls). When a call ends, most of its objects die in reference
cycles, so only the collector can free them.

The policy:

* When a call's pipeline is built and again when its setup is done (``call_ready``),
  ``gc.freeze()`` moves everything alive into the permanent generation: live calls are never
  walked again, and automatic collections only look at objects made since (a few milliseconds
  at most). Frozen objects are still freed the usual way when nothing refers to them; only
  cycles wait.
* Only while at least ``FREEZE_MIN_LIVE`` calls are live: with fewer, a full collection
  walks few call objects anyway, and an unfrozen call's cycles are freed by the automatic
  collections when it ends, with no sweep. (Freezing a handful of calls bought nothing and made
  a flood of short calls, one caller's or an attacker's, force sweeps that stalled the few
  live calls for the whole heap's walk: a 0.6-1.9 s hole in the fuzz test's neighbour call.)
* When as many calls have ended since the last sweep as are live now (and at least
  ``min_ended``), ``call_ended`` runs one full sweep (``gc.unfreeze()``, ``gc.collect()``,
  ``gc.freeze()``) that frees the ended calls' cycles: one pause per "call population" of churn,
  instead of one per minute, and never while idle calls' memory piles up. With no live call
  the sweep runs at once. No sweep while nothing was frozen since the last one.
* Young collections run after ``GEN0_THRESHOLD`` net new objects instead of 700, the middle
  generation every ``GEN1_THRESHOLD`` of them: with live calls frozen they only walk what is in
  flight and the calls being set up (a few milliseconds at most during a burst of setups).
"""

from __future__ import annotations

import gc
import time

from loguru import logger

GEN0_THRESHOLD = 1_000
# Young collections between two middle-generation collections (CPython's default is 10): the
# middle generation holds what survived them, so 5 keeps its collections near 1-2 ms.
GEN1_THRESHOLD = 5
# Ended calls that justify a sweep even when few calls are live.
MIN_ENDED = 100
# Live calls from which a call's objects are frozen at its setup (see the module docstring).
FREEZE_MIN_LIVE = 20


class GcPolicy:
    """Freezes live calls, sweeps ended calls' cycles in rare, bounded pauses (process-wide)."""

    def __init__(self, min_ended: int = MIN_ENDED, freeze_min_live: int = FREEZE_MIN_LIVE) -> None:
        """Create the policy; ``start()`` applies it."""
        self.min_ended = min_ended
        self.freeze_min_live = freeze_min_live
        self._frozen_since_sweep = False
        self.ended_since_sweep = 0
        self.sweeps = 0
        self.last_sweep_ms = 0.0
        self._old_thresholds: tuple[int, int, int] | None = None
        self._users = 0
        self._collected = False
        self._inherited = False

    def start(self) -> None:
        """Freeze what exists (modules, models, personas) and raise the young threshold.

        The first start collects first, so that import-time garbage is not frozen. A later
        start in the same process (tests run one server after another) skips that walk of the
        whole heap (~0.12 s of CPU in a test process): what an earlier server left behind is
        only frozen until this one stops, then the automatic collections free it.

        A heap already frozen when the policy first starts was frozen by a parent before it
        forked this process (the suite's fork server does): the policy keeps it frozen, since
        unfreezing it would make every later full collection walk it again (0.2-0.4 s of CPU
        each) and write to pages the children share. Then only the first start collects and
        freezes (what exists since the fork: a few milliseconds); a later one freezes nothing
        more, so what an earlier server left behind stays within the automatic collections'
        reach.
        """
        self._users += 1
        if self._users > 1:
            return
        if not self._collected:
            self._inherited = gc.get_freeze_count() > 0
            gc.collect()
            self._collected = True
            gc.freeze()
        elif not self._inherited:
            gc.freeze()
        self._old_thresholds = gc.get_threshold()
        gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, self._old_thresholds[2])

    def stop(self) -> None:
        """Restore the collector's defaults (when the last app using the policy stops).

        What was frozen goes back to the oldest generation, where the automatic collections
        free its garbage; no full collection here (a stopping process needs none, and tests
        stop a server per test). A heap a parent froze before the fork stays frozen (see
        ``start``).
        """
        self._users = max(0, self._users - 1)
        if self._users or self._old_thresholds is None:
            return
        gc.set_threshold(*self._old_thresholds)
        self._old_thresholds = None
        if not self._inherited:
            gc.unfreeze()

    def call_ready(self, live_calls: int) -> None:
        """A call is built or set up: with enough calls live, keep it out of collections."""
        if self._old_thresholds is not None and live_calls >= self.freeze_min_live:
            gc.freeze()
            self._frozen_since_sweep = True

    def call_ended(self, live_calls: int) -> None:
        """A call ended; sweep when as many have ended as are live (at least ``min_ended``)."""
        if self._old_thresholds is None:
            return
        self.ended_since_sweep += 1
        if not self._frozen_since_sweep:
            return  # ended calls' cycles are within the automatic collections' reach
        if live_calls == 0 or self.ended_since_sweep >= max(self.min_ended, live_calls):
            self.sweep()

    def sweep(self) -> None:
        """Free the cycles left by ended calls (one full collection), then freeze again."""
        started = time.perf_counter()
        gc.unfreeze()
        freed = gc.collect()
        gc.freeze()
        self._frozen_since_sweep = False
        self.last_sweep_ms = (time.perf_counter() - started) * 1000
        self.sweeps += 1
        ended, self.ended_since_sweep = self.ended_since_sweep, 0
        logger.debug(
            f"gc sweep after {ended} ended calls: {freed} objects freed "
            f"in {self.last_sweep_ms:.0f} ms"
        )


GC_POLICY = GcPolicy()
