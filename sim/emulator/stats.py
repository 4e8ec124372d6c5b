"""The emulator's own event-loop lag: sleep 20 ms, measure the oversleep.

20 ms, as the server's own monitor (``bot.stats``): at 10 ms the sampler's wake-ups were a
quarter of all the loop's callbacks in a one-call test, where the emulator shares the server's
loop.
"""

from __future__ import annotations

import asyncio
from collections import deque

import numpy as np

from pipelines.aio import cancel_and_wait

INTERVAL_SECS = 0.020
MAX_SAMPLES = 60_000  # 20 minutes at 50 samples a second


class LoopLagSampler:
    """Samples how late the event loop wakes a 20 ms sleep.

    A loop that is never busy wakes within a fraction of a millisecond; lag is time during
    which every session's messages wait.
    """

    def __init__(self, interval_secs: float = INTERVAL_SECS) -> None:
        self.interval_secs = interval_secs
        self._samples: deque[float] = deque(maxlen=MAX_SAMPLES)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start sampling on the running loop."""
        self._task = asyncio.create_task(self._run(), name="emulator:loop-lag")

    async def stop(self) -> None:
        """Stop sampling."""
        await cancel_and_wait(self._task)
        self._task = None

    def reset(self) -> None:
        """Forget the samples so far (e.g. when a load phase begins)."""
        self._samples.clear()

    def summary(self) -> dict[str, float]:
        """Lag in milliseconds: p50, p99, max and the sample count."""
        if not self._samples:
            return {"p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "samples": 0}
        data = np.fromiter(self._samples, dtype=np.float64) * 1000
        p50, p99 = np.percentile(data, [50, 99])
        return {
            "p50_ms": round(float(p50), 2),
            "p99_ms": round(float(p99), 2),
            "max_ms": round(float(data.max()), 2),
            "samples": int(data.size),
        }

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.interval_secs)
            self._samples.append(max(0.0, loop.time() - start - self.interval_secs))
