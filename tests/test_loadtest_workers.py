"""``--workers 2``: calls spread over two generator processes, one merged report."""

from __future__ import annotations

import asyncio

import pytest

from sim.loadtest.report import summarize
from sim.loadtest.runner import LoadConfig, run_load
from sim.loadtest.scenario import parse_scenario
from sim.testing import scripted_bot_app

pytestmark = pytest.mark.e2e

SCENARIO = """
steps:
  - wait_for_greeting: {timeout_secs: 2, quiet_secs: 0.1}
  - dtmf: "1"
  - hangup
"""


async def test_two_workers_split_the_calls_and_the_report_merges_them(aiohttp_server) -> None:
    server = await aiohttp_server(scripted_bot_app())
    cfg = LoadConfig(
        url=str(server.make_url("/")),
        scenario=parse_scenario(SCENARIO, "t.yaml"),
        calls=5,
        concurrency=4,
        workers=2,
        seed=7,
    )
    seen: list[str] = []
    # the workers are separate processes; the in-test server keeps serving on this loop
    out = await asyncio.to_thread(run_load, cfg, lambda kind, rec: seen.append(kind))
    assert out.workers == 2
    assert sorted(r["index"] for r in out.records) == [0, 1, 2, 3, 4]
    assert all(r["ok"] for r in out.records), [r["failure"] for r in out.records]
    assert len({r["call_sid"] for r in out.records}) == 5
    assert seen.count("start") == 5 and seen.count("end") == 5
    summary = summarize(out.records, out.lateness, out.concurrency)
    assert summary["calls"] == 5 and summary["ok"] == 5
    assert summary["metrics"]["greeting_ms"]["count"] == 5
    # each worker's ticker sent frames for its own calls; the merged histogram holds both
    ticks = sum(r["duration_secs"] / 0.02 for r in out.records)
    assert ticks > 5 and abs(out.lateness.count - ticks) <= 5  # within one tick per call
    assert 2 <= summary["concurrency_max"] <= 4
    assert out.gc["collections"] is not None and out.cpu_secs > 0
