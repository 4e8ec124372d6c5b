"""Opt-in probe of long event-loop callbacks (``VOICEBOT_STALL_PROBE=1``), for benchmarks.

Loop lag (``bot.stats``) says how late the loop was, not what made it late: twenty call setups
of 1 ms each, ready at once, look like one 20 ms stall. The probe times every callback the
loop runs (``asyncio.events.Handle._run``, the pure-Python loop only; uvloop has no such hook)
and keeps those over ``SLOW_CALLBACK_MS`` in ``STATS.slow_callbacks`` (``/stats``), so a
benchmark can tell "one piece of work held the loop N ms" from "the loop had N ms of work".
It costs two clock reads per callback (about 1 % of a core at 150 calls), hence opt-in.
"""

from __future__ import annotations

import asyncio.events
import time
from collections.abc import Callable
from typing import Any

from bot.stats import STATS

# Callbacks at least this long are recorded.
SLOW_CALLBACK_MS = 1.0

_original: Callable[[Any], None] | None = None


def install() -> bool:
    """Start timing callbacks; False when the running loop is not asyncio's own."""
    global _original
    loop = asyncio.get_running_loop()
    if not isinstance(loop, asyncio.BaseEventLoop):
        return False
    if _original is not None:
        return True
    original = asyncio.events.Handle._run
    threshold = SLOW_CALLBACK_MS / 1000.0
    clock = time.perf_counter
    record = STATS.slow_callbacks.add_secs

    def _run(handle: asyncio.events.Handle) -> None:
        started = clock()
        original(handle)
        took = clock() - started
        if took >= threshold:
            record(took)

    _original = original
    asyncio.events.Handle._run = _run  # type: ignore[method-assign,assignment]
    return True


def uninstall() -> None:
    """Stop timing callbacks."""
    global _original
    if _original is not None:
        asyncio.events.Handle._run = _original  # type: ignore[method-assign,assignment]
        _original = None
