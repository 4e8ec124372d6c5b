"""Process-wide figures of ``bot.stats`` as Prometheus metrics, read at scrape time.

``StatsCollector`` exports loop lag, GC pauses, bridge latency and audio seconds from
``bot.stats.ProcessStats`` when ``/metrics`` is read: one place records them, ``/stats`` and
``/metrics`` both read it (``bot.metrics`` registers it in the app's registry).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from bot.stats import Histogram as StatsHistogram
from bot.stats import ProcessStats

LOOP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
BRIDGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 1.0)


class StatsCollector(Collector):
    """``bot.stats.ProcessStats`` as Prometheus metrics, read at scrape time.

    Lifetime figures only (``POST /stats/reset`` does not move them): histograms from the
    0.25 ms buckets, audio seconds from the lifetime totals.
    """

    def __init__(self, stats: ProcessStats) -> None:
        """Export ``stats``."""
        self._stats = stats

    def describe(self) -> Iterable[Metric]:
        """The metric families, without samples (for the registry's name check)."""
        return [
            HistogramMetricFamily("voicebot_event_loop_lag_seconds", _LAG_DOC),
            HistogramMetricFamily("voicebot_gc_pause_seconds", _GC_DOC),
            HistogramMetricFamily("voicebot_bridge_latency_seconds", _BRIDGE_DOC, labels=["way"]),
            CounterMetricFamily("voicebot_audio_seconds", _AUDIO_DOC, labels=["stream"]),
        ]

    def collect(self) -> Iterable[Metric]:
        """The current figures."""
        s = self._stats
        lag = HistogramMetricFamily("voicebot_event_loop_lag_seconds", _LAG_DOC)
        _add(lag, [], s.loop_lag, LOOP_BUCKETS)
        gc = HistogramMetricFamily("voicebot_gc_pause_seconds", _GC_DOC)
        _add(gc, [], s.gc_pause, LOOP_BUCKETS)
        bridge = HistogramMetricFamily(
            "voicebot_bridge_latency_seconds", _BRIDGE_DOC, labels=["way"]
        )
        _add(bridge, ["in"], s.bridge_in, BRIDGE_BUCKETS)
        _add(bridge, ["out"], s.bridge_out, BRIDGE_BUCKETS)
        audio = CounterMetricFamily("voicebot_audio_seconds", _AUDIO_DOC, labels=["stream"])
        model, phone, caller = s.audio_totals
        audio.add_metric(["caller_in"], caller)
        audio.add_metric(["model_in"], model)
        audio.add_metric(["bot_out"], phone)
        return [lag, gc, bridge, audio]


_LAG_DOC = "How late the event loop woke a 20 ms timer."
_GC_DOC = "Garbage-collection pauses (every collection stops the event loop)."
_BRIDGE_DOC = (
    "Time this server adds: in = Twilio media read -> sent to Gemini; "
    "out = model audio received -> written to Twilio."
)
_AUDIO_DOC = (
    "Audio seconds: caller_in from Twilio, model_in from Gemini, bot_out written to Twilio."
)


def _add(
    family: HistogramMetricFamily, labels: list[str], h: StatsHistogram, edges: tuple[float, ...]
) -> None:
    cumulative = h.cumulative(edges)
    buckets: list[Any] = [(repr(e), c) for e, c in zip(edges, cumulative, strict=True)]
    buckets.append(("+Inf", h.total_n))
    family.add_metric(labels, buckets, h.total_secs)


class RecordsCollector(Collector):
    """The call-record writer's counters (``bot.records.writer.RecordWriter.stats``).

    A record that never reaches the database is counted, never silent: ``dropped`` (queue
    full), ``lost`` (left at shutdown), ``rejected`` (refused by the database as data).
    """

    def __init__(self, stats: Callable[[], Mapping[str, Any]]) -> None:
        """Export what ``stats()`` returns at scrape time."""
        self._stats = stats

    def describe(self) -> Iterable[Metric]:
        """The metric families, without samples."""
        return [
            CounterMetricFamily("voicebot_records", _RECORDS_DOC, labels=["outcome"]),
            GaugeMetricFamily("voicebot_records_queued", "Call records waiting to be written."),
            GaugeMetricFamily("voicebot_records_database_up", "1 while writes succeed."),
        ]

    def collect(self) -> Iterable[Metric]:
        """The current figures."""
        s = self._stats()
        records = CounterMetricFamily("voicebot_records", _RECORDS_DOC, labels=["outcome"])
        for outcome in ("written", "dropped", "lost", "rejected"):
            records.add_metric([outcome], float(s.get(outcome, 0)))
        queued = GaugeMetricFamily("voicebot_records_queued", "Call records waiting to be written.")
        queued.add_metric([], float(s.get("queued", 0)))
        up = GaugeMetricFamily("voicebot_records_database_up", "1 while writes succeed.")
        up.add_metric([], 1.0 if s.get("database_up") else 0.0)
        return [records, queued, up]


_RECORDS_DOC = "Call records by outcome: written, dropped (queue full), lost (shutdown), rejected."
