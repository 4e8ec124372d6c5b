"""Longest-first scheduling of the suite across pytest-xdist workers (a pytest plugin).

Most of the suite's wall time is real-time audio (end-to-end calls of 5-80 s that mostly
wait), not CPU, so the suite's length is set by how the long tests are spread over the
workers. ``--dist worksteal`` hands each worker one contiguous slice of the collection and then
moves tests from the tail of a busy worker's queue to an idle one. This plugin reorders the
collection so that each slice starts with its share of the long tests, dealt longest first to
the slice with the least work so far (the LPT rule), and is topped up with short tests; what
stealing moves is then the short tail.

How long each test takes comes from ``tests/durations.json`` (seconds, setup + call +
teardown, for tests of 2 s or more), written by ``make durations`` (``--store-durations``).
A test missing from it counts as short; a stale file costs only balance, never correctness:
every worker computes the same order from the same file, as xdist requires.
"""

from __future__ import annotations

import heapq
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

DURATIONS_FILE = Path(__file__).parent / "durations.json"
RECORD_MIN_SECS = 2.0
DIST_KEY = "voicebot_dist"


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--store-durations``: record this run's long tests into ``tests/durations.json``."""
    parser.addoption(
        "--store-durations",
        action="store_true",
        help=f"write tests of {RECORD_MIN_SECS:.0f} s or more to {DURATIONS_FILE.name}",
    )


def slices(count: int, workers: int) -> list[int]:
    """The slice sizes worksteal's first distribution gives ``workers`` idle workers."""
    sizes = []
    remaining = count
    for i in range(workers):
        size = remaining // (workers - i)
        sizes.append(size)
        remaining -= size
    return sizes


def lpt_order(items: list[Any], secs: dict[str, float], workers: int) -> list[Any]:
    """``items`` reordered so each worksteal slice starts with an even share of long tests."""
    sizes = slices(len(items), workers)
    long = sorted(
        (it for it in items if secs.get(it.nodeid, 0.0) > 0), key=lambda it: -secs[it.nodeid]
    )
    short = [it for it in items if secs.get(it.nodeid, 0.0) <= 0]
    bins: dict[int, list[Any]] = defaultdict(list)
    heap = [(0.0, i) for i in range(workers) if sizes[i] > 0]
    heapq.heapify(heap)
    for it in long:
        load, i = heapq.heappop(heap)
        bins[i].append(it)
        if len(bins[i]) < sizes[i]:
            heapq.heappush(heap, (load + secs[it.nodeid], i))
    ordered: list[Any] = []
    for i in range(workers):
        ordered.extend(bins[i])
        take = sizes[i] - len(bins[i])
        ordered.extend(short[:take])
        short = short[take:]
    return ordered + short


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """On the xdist controller: tell each worker the ``--dist`` mode.

    A worker's own ``dist`` option always reads ``"no"`` (xdist resets it there), so without
    this the reordering below never ran: until this fix the suite ran in file order.
    """
    node.workerinput[DIST_KEY] = node.config.getoption("dist", "no")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[Any]) -> None:
    """On an xdist worker, put the collection in longest-first slice order."""
    workerinput = getattr(config, "workerinput", None)
    if not workerinput or not DURATIONS_FILE.exists():
        return
    if workerinput.get(DIST_KEY) != "worksteal":
        return
    secs = {k: float(v) for k, v in json.loads(DURATIONS_FILE.read_text()).items()}
    items[:] = lpt_order(list(items), secs, int(workerinput["workercount"]))


class DurationRecorder:
    """Sums each test's phases on the controller and writes the long ones at the end."""

    def __init__(self) -> None:
        """Start with no durations."""
        self.secs: dict[str, float] = defaultdict(float)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Add one phase (setup, call or teardown) of one test."""
        self.secs[report.nodeid] += report.duration

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Write ``tests/durations.json`` (sorted, rounded) from a run that collected all."""
        if getattr(session.config, "workerinput", None):
            return
        long = {k: round(v, 1) for k, v in sorted(self.secs.items()) if v >= RECORD_MIN_SECS}
        DURATIONS_FILE.write_text(json.dumps(long, indent=1) + "\n")


def pytest_configure(config: pytest.Config) -> None:
    """Register the recorder when ``--store-durations`` is given."""
    if config.getoption("store_durations", False) and not getattr(config, "workerinput", None):
        config.pluginmanager.register(DurationRecorder(), "duration-recorder")
