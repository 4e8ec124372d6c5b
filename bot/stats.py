"""Per-process performance counters: bridge latency, event-loop lag; served as ``GET /stats``.

``/stats`` lives on the operations listener (``bot.ops``), never on the public one.

Cheap enough to leave on in production: recording a sample is one list-index increment
(fixed-size histograms, no allocation, no logging). Percentiles are computed only when
``/stats`` is read.

Bridge latency is the time this server adds, each way:

* ``bridge_in_ms``: a Twilio ``media`` message read from the socket -> its audio handed to the
  Gemini service's send path, one sample per message (with 40 ms batches the first 20 ms
  message of each batch counts the batching wait, ~20 ms, and the second ~0).
* ``bridge_out_ms``: a model audio message received (or, when it arrived ahead of real time,
  the moment the pacing clock let its audio go) -> the first frame carrying it written to the
  Twilio socket. Real-time pacing itself is not counted: that is the phone's playout rate.
* ``gc_pause_ms``: every garbage collection, any generation (each one stops the loop).
* ``slow_callbacks_ms``: single loop callbacks of 1 ms or more; empty unless the opt-in
  ``bot.stall_probe`` runs (``VOICEBOT_STALL_PROBE=1``).
* ``vad`` (when the app's VAD detector has ``stats()``): its cumulative counters, as it
  reports them (windows, batches, seconds in inference and on the loop); not reset by
  ``POST /stats/reset`` (readers take differences).

The same histograms and audio seconds are exported to Prometheus by ``bot.metrics``
(``StatsCollector``, read at scrape time: one place records, two read). ``POST /stats/reset``
only moves ``/stats``'s baseline: each histogram keeps its lifetime counts and sum, and the
audio totals their lifetime values, so Prometheus counters never go backwards.
"""

from __future__ import annotations

import asyncio
import resource
import time
from typing import Any

from aiohttp import web
from loguru import logger

from bot.app_keys import CALLS, FORWARDER, VAD_MODEL, WARM_SESSIONS

# Histogram resolution: 0.25 ms buckets up to 1 s, then one overflow bucket.
BUCKET_MS = 0.25
NUM_BUCKETS = 4000
LAG_INTERVAL_SECS = 0.02
# Admission guard: refuse new calls while the loop is lagging: at least LAG_GUARD_MIN_LATE
# timer ticks (of ~100 in LAG_WINDOW_SECS) were later than the limit. One call setup or a GC
# pause is one late tick; an overloaded loop is late on many.
LAG_WINDOW_SECS = 2.0
LAG_GUARD_MIN_LATE = 10


class Histogram:
    """Fixed-bucket latency histogram in milliseconds (0.25 ms resolution up to 1 s).

    ``counts``, ``total_n`` and ``total_secs`` are lifetime figures (Prometheus reads them);
    ``n``, the percentiles and ``max_ms`` count from the last ``reset()``.
    """

    __slots__ = ("counts", "total_n", "total_secs", "max_ms", "_base", "_base_n")

    def __init__(self) -> None:
        """Create an empty histogram."""
        self.counts = [0] * (NUM_BUCKETS + 1)
        self.total_n = 0
        self.total_secs = 0.0
        self.max_ms = 0.0
        self._base: list[int] | None = None  # lifetime counts at the last reset
        self._base_n = 0

    @property
    def n(self) -> int:
        """Samples since the last reset."""
        return self.total_n - self._base_n

    def add_secs(self, secs: float) -> None:
        """Record one sample given in seconds."""
        ms = secs * 1000.0
        i = int(ms / BUCKET_MS)
        if i < 0:
            i = 0
        elif i > NUM_BUCKETS:
            i = NUM_BUCKETS
        self.counts[i] += 1
        self.total_n += 1
        self.total_secs += secs
        if ms > self.max_ms:
            self.max_ms = ms

    def cumulative(self, edges_secs: tuple[float, ...]) -> list[int]:
        """Lifetime samples at or under each edge (Prometheus ``le`` buckets, from 0.25 ms)."""
        out, seen, i = [], 0, 0
        for edge in edges_secs:
            stop = min(int(round(edge * 1000.0 / BUCKET_MS)), NUM_BUCKETS)
            seen += sum(self.counts[i:stop])
            i = max(i, stop)
            out.append(seen)
        return out

    def percentile(self, q: float) -> float | None:
        """Upper edge of the bucket holding the ``q``-th percentile (ms), None when empty."""
        n = self.n
        if not n:
            return None
        rank = max(1, round(q / 100.0 * n))
        seen = 0
        base = self._base
        for i, c in enumerate(self.counts):
            seen += c - base[i] if base is not None else c
            if seen >= rank:
                edge = min((i + 1) * BUCKET_MS, self.max_ms) if i < NUM_BUCKETS else self.max_ms
                return round(edge, 2)
        return self.max_ms

    def summary(self) -> dict[str, Any]:
        """Count, p50/p90/p99/max in ms."""
        return {
            "count": self.n,
            "p50": self.percentile(50),
            "p90": self.percentile(90),
            "p99": self.percentile(99),
            "max": round(self.max_ms, 2) if self.n else None,
        }

    def reset(self) -> None:
        """Start ``/stats``'s figures afresh (the lifetime ones go on)."""
        self._base = self.counts.copy()
        self._base_n = self.total_n
        self.max_ms = 0.0


class ProcessStats:
    """The process's counters (one instance, ``STATS``).

    Implements ``pipelines.ports.BridgeMetrics``: the server hands it to every call.
    """

    def __init__(self) -> None:
        """Create empty counters."""
        self.bridge_in = Histogram()
        self.bridge_out = Histogram()
        self.loop_lag = Histogram()
        self.gc_pause = Histogram()
        self.slow_callbacks = Histogram()  # only with bot.stall_probe installed
        self._gc_started = 0.0
        self.model_audio_secs = 0.0
        self.twilio_audio_secs = 0.0
        self.caller_audio_secs = 0.0
        # Lifetime audio seconds (never reset; Prometheus counters): model, phone, caller.
        self.audio_totals = [0.0, 0.0, 0.0]
        self._lag_marks: list[tuple[float, float]] = []  # (time, lag) of lags over 5 ms
        self.started = time.monotonic()

    def reset(self) -> None:
        """Forget all samples (``POST /stats/reset``; benchmarks call it between phases)."""
        self.bridge_in.reset()
        self.bridge_out.reset()
        self.loop_lag.reset()
        self.gc_pause.reset()
        self.slow_callbacks.reset()
        self.model_audio_secs = 0.0
        self.twilio_audio_secs = 0.0
        self.caller_audio_secs = 0.0
        self._lag_marks.clear()

    def add_model_audio_secs(self, secs: float) -> None:
        """Seconds of audio received from the model (``BridgeMetrics``)."""
        self.model_audio_secs += secs
        self.audio_totals[0] += secs

    def add_twilio_audio_secs(self, secs: float) -> None:
        """Seconds of audio written to Twilio (``BridgeMetrics``)."""
        self.twilio_audio_secs += secs
        self.audio_totals[1] += secs

    def add_caller_audio_secs(self, secs: float) -> None:
        """Seconds of caller audio received from Twilio (``BridgeMetrics``)."""
        self.caller_audio_secs += secs
        self.audio_totals[2] += secs

    def gc_callback(self, phase: str, info: dict[str, Any]) -> None:
        """``gc.callbacks`` hook: time every collection (any generation stops the loop)."""
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc_pause.add_secs(time.perf_counter() - self._gc_started)

    def note_lag(self, now: float, lag: float) -> None:
        """Record one loop-lag sample (seconds)."""
        self.loop_lag.add_secs(lag)
        if lag > 0.005:
            self._lag_marks.append((now, lag))
            if len(self._lag_marks) > 256:
                del self._lag_marks[:128]

    def late_ticks(self, now: float, limit_ms: float, window_secs: float = LAG_WINDOW_SECS) -> int:
        """How many loop-lag samples in the last ``window_secs`` exceeded ``limit_ms``."""
        late = 0
        for t, lag in reversed(self._lag_marks):
            if now - t > window_secs:
                break
            if lag * 1000.0 > limit_ms:
                late += 1
        return late

    def snapshot(self, calls: int) -> dict[str, Any]:
        """The JSON served by ``GET /stats``."""
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "calls": calls,
            "uptime_secs": round(time.monotonic() - self.started, 1),
            "cpu_secs": round(ru.ru_utime + ru.ru_stime, 3),
            "max_rss_mb": round(ru.ru_maxrss / 1024, 1),
            "loop_lag_ms": self.loop_lag.summary(),
            "gc_pause_ms": self.gc_pause.summary(),
            "slow_callbacks_ms": self.slow_callbacks.summary(),
            "bridge_in_ms": self.bridge_in.summary(),
            "bridge_out_ms": self.bridge_out.summary(),
            "model_audio_secs": round(self.model_audio_secs, 2),
            "twilio_audio_secs": round(self.twilio_audio_secs, 2),
            "caller_audio_secs": round(self.caller_audio_secs, 2),
        }


STATS = ProcessStats()


async def monitor_loop_lag(stats: ProcessStats, interval_secs: float = LAG_INTERVAL_SECS) -> None:
    """Measure how late the event loop wakes a timer, forever (cancel to stop)."""
    while True:
        due = time.monotonic() + interval_secs
        await asyncio.sleep(interval_secs)
        now = time.monotonic()
        stats.note_lag(now, max(0.0, now - due))


def lag_guard(stats: ProcessStats, limit_ms: float) -> str | None:
    """Why new calls must be refused now (the loop is lagging), or None."""
    late = stats.late_ticks(time.monotonic(), limit_ms)
    if late >= LAG_GUARD_MIN_LATE:
        return (
            f"event loop {late} times more than {limit_ms:.0f} ms late "
            f"in the last {LAG_WINDOW_SECS:.0f} s"
        )
    return None


def add_stats_routes(
    app: web.Application, calls_count: Any, *, reset_needs_loopback: bool = True
) -> None:
    """Add ``GET /stats`` and ``POST /stats/reset``; ``calls_count()`` gives live calls.

    ``reset_needs_loopback``: only loopback peers may reset (when no ops token guards it).
    """

    async def get_stats(request: web.Request) -> web.Response:
        snap = STATS.snapshot(calls_count())
        # Read-only: the local VAD's own counters (windows run, batches, inference seconds),
        # when the process-wide detector in the app offers them; the benchmark reads them.
        counters = getattr(request.app.get(VAD_MODEL), "stats", None)
        if callable(counters):
            snap["vad"] = counters()
        if (warm := request.app.get(WARM_SESSIONS)) is not None:  # bot.warm_sessions
            snap["warm_sessions"] = dict(warm.counts)  # pre-warming outcomes
        if (calls := request.app.get(CALLS)) is not None:  # admission of this process
            snap["calls_max"] = calls.max_live
            snap["admission"] = dict(calls.totals)
        if (forwarder := request.app.get(FORWARDER)) is not None:  # bot.stream_forward
            snap["relays"] = forwarder.stats.snapshot()
        return web.json_response(snap)

    async def reset_stats(request: web.Request) -> web.Response:
        if reset_needs_loopback and request.remote not in ("127.0.0.1", "::1"):
            raise web.HTTPForbidden(text="stats reset is loopback only\n")
        STATS.reset()
        logger.debug("stats reset")
        return web.json_response({"reset": True})

    app.router.add_get("/stats", get_stats)
    app.router.add_post("/stats/reset", reset_stats)
