"""Opt-in probe of long event-loop callbacks (``VOICEBOT_STALL_PROBE=1``), for benchmarks.

Loop lag (``bot.stats``) says how late the loop was, not what made it late: twenty call setups
of 1 ms each, ready at once, look like one 20 ms stall. The probe times every callback the
loop runs (``asyncio.events.Handle._run``, the pure-Python loop only; uvloop has no such hook)
and hands those over ``SLOW_CALLBACK_MS`` to a recorder (the app passes
``STATS.slow_callbacks.add_secs``, shown in ``/stats``), so a benchmark can tell "one piece of
work held the loop N ms" from "the loop had N ms of work". It costs two clock reads per
callback (about 1 % of a core at 150 calls), hence opt-in: importing this module changes
nothing; the app owns a ``StallProbe``, installs it at start and uninstalls it at cleanup.
The private name it replaces is listed in ``pipelines/_compat/accesses.py``.
"""

from __future__ import annotations

import asyncio.events
import time
from collections.abc import Callable
from typing import Any

# Callbacks at least this long are recorded.
SLOW_CALLBACK_MS = 1.0


class StallProbe:
    """Times event-loop callbacks while installed; records those of ``threshold_ms`` or more.

    Args:
        record: Called with each long callback's duration in seconds.
        threshold_ms: The shortest callback recorded.
    """

    def __init__(self, record: Callable[[float], None], threshold_ms: float = SLOW_CALLBACK_MS):
        self._record = record
        self._threshold_secs = threshold_ms / 1000.0
        self._original: Callable[[Any], None] | None = None
        self._wrapper: Callable[[Any], None] | None = None

    @property
    def installed(self) -> bool:
        """Whether this probe is timing callbacks."""
        return self._original is not None

    def install(self) -> bool:
        """Start timing callbacks; False when the running loop is not asyncio's own."""
        loop = asyncio.get_running_loop()
        if not isinstance(loop, asyncio.BaseEventLoop):
            return False
        if self._original is not None:
            return True
        original = asyncio.events.Handle._run
        threshold = self._threshold_secs
        clock = time.perf_counter
        record = self._record

        def _run(handle: asyncio.events.Handle) -> None:
            started = clock()
            original(handle)
            took = clock() - started
            if took >= threshold:
                record(took)

        self._original, self._wrapper = original, _run
        asyncio.events.Handle._run = _run  # type: ignore[method-assign,assignment]
        return True

    def uninstall(self) -> None:
        """Stop timing callbacks (idempotent); restores what was there before ``install``."""
        if self._original is None:
            return
        if asyncio.events.Handle._run is self._wrapper:  # type: ignore[comparison-overlap]
            asyncio.events.Handle._run = self._original  # type: ignore[method-assign,assignment]
        self._original = self._wrapper = None
