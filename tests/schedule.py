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

Tests marked ``cpu_heavy`` (most of a core for seconds: the fuzzers, fifty calls through a
proxy, ``voicebot serve`` processes, whole-package scans) are dealt as one chain to one slice,
which runs them one after another. Dealt like the rest, they met at the start of the run (two
fuzzers and the proxy test at once held both cores for ~20 s), and the calls that measure
their own timing on the other workers measured the machine.
"""

from __future__ import annotations

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


def lpt_order(
    items: list[Any], secs: dict[str, float], workers: int, chained: frozenset[str] = frozenset()
) -> list[Any]:
    """``items`` reordered so each worksteal slice starts with an even share of long tests.

    The tests whose node ids are in ``chained`` are dealt as one unit, longest first, to a
    single slice (to the front of it, where no other worker steals from).
    """
    sizes = slices(len(items), workers)
    chain = sorted(
        (it for it in items if it.nodeid in chained), key=lambda it: -secs.get(it.nodeid, 0.0)
    )
    units = [[it] for it in items if secs.get(it.nodeid, 0.0) > 0 and it.nodeid not in chained]
    if chain:
        units.append(chain)
    units.sort(key=lambda unit: -sum(secs.get(it.nodeid, 0.0) for it in unit))
    dealt = {it.nodeid for unit in units for it in unit}
    short = [it for it in items if it.nodeid not in dealt]
    bins: dict[int, list[Any]] = defaultdict(list)
    load = [0.0] * workers
    for unit in units:
        room = [i for i in range(workers) if sizes[i] - len(bins[i]) >= len(unit)]
        if not room:  # more long tests than slots: the rest go in as short ones
            short = unit + short
            continue
        i = min(room, key=lambda k: (load[k], k))
        bins[i].extend(unit)
        load[i] += sum(secs.get(it.nodeid, 0.0) for it in unit)
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
    heavy = frozenset(it.nodeid for it in items if it.get_closest_marker("cpu_heavy"))
    items[:] = lpt_order(list(items), secs, int(workerinput["workercount"]), heavy)


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
