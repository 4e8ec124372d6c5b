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

With four workers or more, the real-time, heavy and batch tests (``tests/roles.py``) are
dealt separately, each kind to its own workers (:class:`RoleScheduling`), and work moves only
between workers of one role.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from xdist.scheduler import WorkStealingScheduling
from xdist.scheduler.worksteal import MIN_PENDING, NodePending
from xdist.workermanage import parse_tx_spec_config

from tests.roles import (
    BATCH,
    HEAVY,
    REALTIME,
    ROLE_KEY,
    role_of_nodeid,
    role_of_worker,
    worker_roles,
)

DURATIONS_FILE = Path(__file__).parent / "durations.json"
RECORD_MIN_SECS = 2.0
DIST_KEY = "voicebot_dist"
# The roles of workers that crashed with tests, for the workers xdist starts in their place.
LOST_ROLES = pytest.StashKey[list[str]]()


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
    dist = node.config.getoption("dist", "no")
    node.workerinput[DIST_KEY] = dist
    if dist == "worksteal":
        count = int(node.workerinput["workercount"])
        index = _worker_index(node)
        lost = node.config.stash.get(LOST_ROLES, [])
        role = lost.pop(0) if index >= count and lost else role_of_worker(index, count)
        node.workerinput[ROLE_KEY] = role


def _worker_index(node: Any) -> int:
    """``N`` of the worker ``gwN`` (a replacement for a crashed worker counts past the rest)."""
    name = node.gateway.id
    return int(name[2:]) if name.startswith("gw") and name[2:].isdigit() else 1 << 30


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[Any]) -> None:
    """On an xdist worker, put the collection in longest-first slice order."""
    workerinput = getattr(config, "workerinput", None)
    if not workerinput or not DURATIONS_FILE.exists():
        return
    if workerinput.get(DIST_KEY) != "worksteal":
        return
    secs = {k: float(v) for k, v in json.loads(DURATIONS_FILE.read_text()).items()}
    workers = int(workerinput["workercount"])
    items[:] = role_order(list(items), secs, workers, config.rootpath)


def role_order(items: list[Any], secs: dict[str, float], workers: int, root: Path) -> list[Any]:
    """Each role's tests in LPT order for that role's workers, the roles in the workers' order.

    The heavy tests are one chain. With no roles, one LPT order for all. The roles are read as
    the controller reads them (:func:`tests.roles.role_of_nodeid`), so both sides agree on
    where one kind ends.
    """
    kinds: dict[str, list[Any]] = defaultdict(list)
    for it in items:
        kinds[role_of_nodeid(it.nodeid, root)].append(it)
    chained = frozenset(it.nodeid for it in kinds[HEAVY])
    roles = worker_roles(workers)
    if not roles:
        return lpt_order(items, secs, workers, chained)
    return [
        it
        for role in dict.fromkeys(roles)
        for it in lpt_order(kinds[role], secs, roles.count(role), chained)
    ]


class RoleScheduling(WorkStealingScheduling):
    """xdist's work stealing, with each test going to workers of its role.

    The first distribution gives each worker one contiguous slice of its role's tests, as
    :func:`role_order` expects; an idle worker then steals from workers of its role. A worker
    whose role has nothing left may help with the batch tests (a run of only unit tests uses
    every worker). The heavy and batch workers take no call while a test of their own kind is
    left, and the batch worker never a heavy test: the unit tests' worker runs nothing beside
    them, and the heavy tests never run two at once.

    Once every test of its role has run or is running (none waits to be dealt or in a queue
    behind another test), the heavy or batch worker steals calls like a real-time one, and the
    calls queued on it may be stolen like theirs (it was idle for the last ~60 s of a run whose
    length the calls set). Unit tests still queued on a helper keep the batch worker from
    calls: with none of its own left, it ends.

    A worker that replaces a crashed one takes its role (:func:`pytest_configure_node`); a role
    with no worker up (its workers were shut down or crashed) has its tests run by any idle
    worker.
    """

    def __init__(self, config: pytest.Config, log: Any = None) -> None:
        """As xdist's scheduler; roles are read once the collection is known."""
        super().__init__(config, log)
        self._roles: list[str] = []  # by collection index, filled at the first dealing

    def _node_role(self, node: Any) -> str | None:
        return node.workerinput.get(ROLE_KEY)

    def _test_role(self, index: int) -> str:
        if not self._roles:
            root = self.config.rootpath
            self._roles = [role_of_nodeid(nodeid, root) for nodeid in self.collection or ()]
        return self._roles[index]

    def check_schedule(self) -> None:
        """Hand out pending tests to idle workers of their role; else steal, else end them."""
        nodes_up = [
            NodePending(node, pending)
            for node, pending in self.node2pending.items()
            if not node.shutting_down
        ]

        def idle_nodes() -> list[Any]:
            return [node for node, pending in nodes_up if len(pending) < MIN_PENDING]

        if not idle_nodes():
            return
        roles_up = {self._node_role(node) for node, _ in nodes_up}

        def role(index: int) -> str | None:  # None: any worker may run it
            found = self._test_role(index)
            return found if found in roles_up else None

        if self.pending:
            self._deal(idle_nodes(), role, nodes_up)
        done = self._done_nodes(nodes_up)
        for node in idle_nodes():
            peers = [p for p in nodes_up if p.node is not node and len(p.pending) > MIN_PENDING]
            kind = self._node_role(node)
            own = [p for p in peers if self._node_role(p.node) == kind]
            donors = own or [p for p in peers if self._node_role(p.node) == BATCH]
            if kind == REALTIME or (not donors and node in done):
                # Calls, also those queued on a heavy or batch worker whose kind is done.
                taken = {id(p.node) for p in donors}
                donors += [
                    p
                    for p in peers
                    if id(p.node) not in taken
                    and (self._node_role(p.node) == REALTIME or p.node in done)
                ]
            if not donors:  # nothing left it may run: it runs its last test and ends
                node.shutdown()
            elif self.steal_requested_from_node is None:  # one steal at a time
                donor = max(donors, key=lambda p: len(p.pending))
                num_steal = min(len(donor.pending) // 2, len(donor.pending) - MIN_PENDING)
                donor.node.send_steal(donor.pending[-num_steal:])
                self.steal_requested_from_node = donor.node

    def _done_nodes(self, nodes_up: list[NodePending]) -> list[Any]:
        """The heavy and batch workers whose kind is done.

        Done: every test of the kind has run or is running (first in a worker's queue); none
        waits to be dealt or behind another test.
        """
        waiting = {self._test_role(i) for i in self.pending}
        for p in nodes_up:
            waiting.update(self._test_role(i) for i in p.pending[1:])
        return [
            p.node
            for p in nodes_up
            if (kind := self._node_role(p.node)) != REALTIME and kind not in waiting
        ]

    def _deal(
        self, idle: list[Any], role: Callable[[int], str | None], nodes_up: list[NodePending]
    ) -> None:
        """Split the pending tests among ``idle`` workers, each its own role's first.

        The batch tests go to the idle batch workers and to the idle workers left without a
        test of their own role; calls left over (stolen for a heavy or batch worker whose role
        is done) to such a worker.
        """
        helpers: list[Any] = []
        for kind in dict.fromkeys(self._node_role(node) for node in idle):
            if kind == BATCH:
                continue
            nodes = [node for node in idle if self._node_role(node) == kind]
            queue = [i for i in self.pending if role(i) in (kind, None)]
            helpers += nodes[len(queue) :]  # more workers than tests: the rest may help
            self._split(nodes[: len(queue)], queue)
        nodes = [node for node in idle if self._node_role(node) == BATCH] + helpers
        self._split(nodes, [i for i in self.pending if role(i) in (BATCH, None)])
        done = [
            node
            for node in self._done_nodes(nodes_up)
            if node in idle and len(self.node2pending[node]) < MIN_PENDING
        ]
        self._split(done, [i for i in self.pending if role(i) == REALTIME])

    def _split(self, nodes: list[Any], queue: list[int]) -> None:
        for k, node in enumerate(nodes):
            num = len(queue) // (len(nodes) - k)
            if num:
                chosen, queue = queue[:num], queue[num:]
                taken = set(chosen)
                self.pending[:] = [i for i in self.pending if i not in taken]
                self.node2pending[node].extend(chosen)
                node.send_runtest_some(chosen)

    def remove_node(self, node: Any) -> str | None:
        """As xdist's; a worker that crashed with tests leaves its role to its replacement."""
        crashed = bool(self.node2pending.get(node))
        crashitem = super().remove_node(node)
        if crashed and (role := self._node_role(node)) is not None:
            self.config.stash.setdefault(LOST_ROLES, []).append(role)
        return crashitem


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist worksteal`` with worker roles: :class:`RoleScheduling`; else xdist's own."""
    if config.getoption("dist", "no") != "worksteal":
        return None
    workers = len(parse_tx_spec_config(config))
    return RoleScheduling(config, log) if worker_roles(workers) else None


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
