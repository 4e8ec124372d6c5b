"""``bot.stats``: the loop-lag admission guard, the /stats snapshot and the VAD's counters."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bot.app_keys import VAD_MODEL
from bot.calls import CallRegistry
from bot.stats import LAG_GUARD_MIN_LATE, ProcessStats, add_stats_routes, lag_guard

pytestmark = pytest.mark.unit


def test_one_stall_does_not_refuse_calls_but_sustained_lag_does() -> None:
    stats = ProcessStats()
    now = stats.started
    stats.note_lag(now, 0.080)  # one call setup or GC pause
    assert stats.late_ticks(now, 25.0) == 1
    for i in range(LAG_GUARD_MIN_LATE):
        stats.note_lag(now + 0.02 * i, 0.030)
    assert stats.late_ticks(now + 0.2, 25.0) == LAG_GUARD_MIN_LATE + 1
    # Old samples leave the window.
    assert stats.late_ticks(now + 10.0, 25.0) == 0


async def test_registry_refuses_while_the_guard_says_overloaded() -> None:
    calls = CallRegistry(max_calls=100)
    reason: list[str | None] = [None]
    calls.guard = lambda: reason[0]
    assert calls.reserve("CA1")
    reason[0] = "event loop lagging"
    assert not calls.reserve("CA2")
    assert calls.totals["refused_overload"] == 1
    reason[0] = None
    assert calls.reserve("CA3")


def test_guard_and_snapshot_on_fresh_stats() -> None:
    stats = ProcessStats()
    assert lag_guard(stats, 25.0) is None
    snap = stats.snapshot(calls=3)
    assert snap["calls"] == 3
    assert snap["bridge_in_ms"]["count"] == 0 and snap["bridge_in_ms"]["p50"] is None
    stats.bridge_out.add_secs(0.004)
    stats.reset()
    assert stats.bridge_out.n == 0


async def test_stats_carry_the_vad_detectors_counters_when_it_has_them() -> None:
    class Detector:
        def stats(self) -> dict[str, float]:
            return {"windows": 310, "batches": 12, "infer_secs": 0.0084}

    async def fetch(vad: object) -> dict[str, object]:
        app = web.Application()
        app[VAD_MODEL] = vad  # type: ignore[misc]  # any object in the slot
        add_stats_routes(app, lambda: 2)
        async with TestClient(TestServer(app)) as client:
            resp = await client.get("/stats")
            assert resp.status == 200
            return dict(await resp.json())

    got = await fetch(Detector())
    assert got["calls"] == 2
    assert got["vad"] == {"windows": 310, "batches": 12, "infer_secs": 0.0084}
    assert "vad" not in await fetch(object())  # a detector without counters: nothing added
