"""How the suite runs: forked workers (tests/forkserver.py), the schedule (tests/schedule.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import schedule
from tests.forkserver import FORKSERVER_UNSAFE_NOTE, _code_of
from tests.roles import (
    BATCH,
    HEAVY,
    REALTIME,
    ROLE_KEY,
    ROLES_ENV,
    role_of_markers,
    role_of_nodeid,
    role_of_worker,
    worker_roles,
)
from tests.schedule import RoleScheduling, lpt_order, role_order, slices
from tests.xdist_workers import ALWAYS, FORKSERVER, NOT_PRELOADED, preload_modules

PRINT_ORIGIN = (
    "import gc, os, sys\n"
    "line = sys.stdin.readline().strip()\n"
    "print(os.getppid(), gc.get_freeze_count() > 0, os.getcwd(), os.environ.get('PROBE'),"
    " sys.argv, line.upper())\n"
    "sys.exit(3)\n"
)


@pytest.fixture
def fork_server(tmp_path: Path):
    """Start a fork server (preloading ``json``); yield ``(socket path, server process)``."""
    servers = []

    def start(*modules: str) -> tuple[str, subprocess.Popen[bytes]]:
        path = str(tmp_path / f"socket{len(servers)}")
        proc = subprocess.Popen(
            [sys.executable, "-u", str(FORKSERVER), "serve", path, *modules],
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        servers.append(proc)
        deadline = time.monotonic() + 10
        while not os.path.exists(path):
            assert proc.poll() is None and time.monotonic() < deadline, "fork server did not bind"
            time.sleep(0.01)
        return path, proc

    yield start
    for proc in servers:
        proc.terminate()
        proc.wait(5)
        assert proc.stderr is not None
        proc.stderr.close()


def _launch(path: str, cwd: Path) -> tuple[int, list[str]]:
    """Run PRINT_ORIGIN through the launcher; its exit code and what it printed."""
    done = subprocess.run(
        [sys.executable, "-S", str(FORKSERVER), "launch", path, "-u", "-c", PRINT_ORIGIN, "arg"],
        input=b"hello\n",
        capture_output=True,
        cwd=cwd,
        env={**os.environ, "PROBE": "from-the-launcher"},
        timeout=30,
    )
    return done.returncode, done.stdout.decode().split(" ", 3)


@pytest.mark.e2e
def test_a_launched_worker_is_a_fork_with_the_launchers_streams_folder_env_and_status(
    fork_server, tmp_path
):
    path, server = fork_server("json")
    code, (ppid, frozen, cwd, rest) = _launch(path, tmp_path)

    assert code == 3  # the child's exit status, relayed
    assert int(ppid) == server.pid  # forked by the server, not a fresh interpreter
    assert frozen == "True"  # the server froze its imported heap before the fork
    assert cwd == str(tmp_path)
    assert rest.strip() == "from-the-launcher ['-c', 'arg'] HELLO"  # env, argv, stdin


@pytest.mark.e2e
def test_functions_named_in_the_preload_run_once_in_the_server_before_the_forks(
    fork_server, tmp_path
):
    path, _ = fork_server("json", "gc:disable")  # a visible trace in every child
    done = subprocess.run(
        [sys.executable, "-S", str(FORKSERVER), "launch", path, "-c", "import gc\n"
         "print(gc.isenabled())"],
        capture_output=True, cwd=tmp_path, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().strip() == "False"


@pytest.mark.e2e
def test_with_no_server_or_a_fork_unsafe_one_the_launcher_runs_python_itself(fork_server, tmp_path):
    code, (ppid, frozen, cwd, rest) = _launch(str(tmp_path / "no-such-socket"), tmp_path)
    assert code == 3 and int(ppid) == os.getpid()  # exec'd in place: our own child
    assert frozen == "False"
    assert rest.strip() == "from-the-launcher ['-c', 'arg'] HELLO"

    path, server = fork_server("onnxruntime")  # starts native threads: no forking
    code, (ppid, _, _, rest) = _launch(path, tmp_path)
    assert code == 3 and int(ppid) == os.getpid()
    assert rest.strip() == "from-the-launcher ['-c', 'arg'] HELLO"
    server.terminate()
    server.wait(5)
    assert server.stderr is not None
    assert FORKSERVER_UNSAFE_NOTE in server.stderr.read().decode()


@pytest.mark.unit
def test_only_python_dash_c_is_forked():
    assert _code_of(["-u", "-c", "pass", "x"]) == ("pass", ["-c", "x"])
    assert _code_of(["-B", "-c", "pass"]) == ("pass", ["-c"])
    assert _code_of(["-X", "dev", "-c", "pass"]) is None
    assert _code_of(["-m", "pytest"]) is None


@pytest.mark.unit
def test_the_preload_is_what_test_modules_import_without_tests_or_onnxruntime():
    names = preload_modules()
    assert names[: len(ALWAYS)] == list(ALWAYS)
    assert "pytest" in names and "sim.caller" in names
    assert not [n for n in names if n.startswith(("tests", "__future__", *NOT_PRELOADED))]


@dataclass
class Item:
    nodeid: str


@pytest.mark.unit
def test_chained_tests_run_one_after_another_at_the_front_of_one_slice():
    secs = {f"long{i}": 30.0 - i for i in range(6)} | {"heavy_a": 17.0, "heavy_b": 16.0}
    secs |= {"heavy_c": 9.0}
    names = [*secs, "heavy_unmeasured", *(f"short{i}" for i in range(40))]
    items = [Item(n) for n in names]
    chained = frozenset({"heavy_a", "heavy_b", "heavy_c", "heavy_unmeasured"})

    ordered = lpt_order(items, secs, 4, chained)

    assert sorted(it.nodeid for it in ordered) == sorted(names)  # nothing lost or doubled
    sizes = slices(len(items), 4)
    cuts = [sum(sizes[:i]) for i in range(5)]
    parts = [[it.nodeid for it in ordered[cuts[i] : cuts[i + 1]]] for i in range(4)]
    (holder,) = [p for p in parts if "heavy_a" in p]
    assert holder[:4] == ["heavy_a", "heavy_b", "heavy_c", "heavy_unmeasured"]  # longest first
    # The six long tests are spread over the slices by load: none holds more than two.
    assert max(sum(n.startswith("long") for n in p) for p in parts) <= 2
    assert all(not p[0].startswith("short") for p in parts)


@pytest.mark.unit
def test_each_tests_role_read_from_the_module_text_is_the_one_its_markers_give(request):
    # The controller deals by the text (it sees node ids only); the markers are the truth.
    # Every collected test is checked: under `make test`, the whole suite.
    items = request.session.items
    root = request.config.rootpath
    read = {it.nodeid: role_of_nodeid(it.nodeid, root) for it in items}
    wrong = [
        (it.nodeid, read[it.nodeid])
        for it in items
        if read[it.nodeid] != role_of_markers({m.name for m in it.iter_markers()})
    ]
    assert items and not wrong, wrong[:5]


@pytest.mark.unit
def test_a_role_is_read_from_module_function_and_list_markers(tmp_path):
    (tmp_path / "test_m.py").write_text(
        "import pytest\n"
        "pytestmark = [pytest.mark.e2e, pytest.mark.timeout(5)]\n"
        "def test_call(): pass\n"
        "@pytest.mark.cpu_heavy\n"
        "def test_heavy(): pass\n"
    )
    (tmp_path / "test_u.py").write_text(
        "import pytest\n@pytest.mark.e2e\nasync def test_one(): pass\ndef test_two(): pass\n"
    )
    assert role_of_nodeid("test_m.py::test_call", tmp_path) == REALTIME
    assert role_of_nodeid("test_m.py::test_heavy[x-1]", tmp_path) == HEAVY
    assert role_of_nodeid("test_u.py::test_one", tmp_path) == REALTIME
    assert role_of_nodeid("test_u.py::test_two", tmp_path) == BATCH
    assert role_of_nodeid("missing.py::test_x", tmp_path) == BATCH
    (tmp_path / "test_t.py").write_text(
        "import pytest\npytestmark = [pytest.mark.unit, pytest.mark.timed]\n"
    )
    assert role_of_nodeid("test_t.py::test_any", tmp_path) == REALTIME  # real timers


@pytest.mark.unit
def test_with_four_workers_or_more_one_is_heavy_one_batch_the_rest_real_time(monkeypatch):
    monkeypatch.delenv(ROLES_ENV, raising=False)
    assert worker_roles(3) == []
    assert worker_roles(4) == [HEAVY, BATCH, REALTIME, REALTIME]
    assert [role_of_worker(i, 10) for i in (0, 1, 2, 9, 12)] == [HEAVY, BATCH, *[REALTIME] * 3]
    monkeypatch.setenv(ROLES_ENV, "0")
    assert worker_roles(10) == [] and role_of_worker(0, 10) is None


class FakeConfig:
    """What the scheduler and the hooks use of the controller's pytest config."""

    def __init__(self, root: Path, workers: int, dist: str = "worksteal") -> None:
        self.rootpath = root
        self.stash = pytest.Stash()
        self.options = {"tx": [f"{workers}*popen"], "dist": dist}

    def getvalue(self, name: str) -> object:
        return self.options[name]

    def getoption(self, name: str, default: object = None) -> object:
        return self.options.get(name, default)


class FakeNode:
    """What the scheduler and ``pytest_configure_node`` use of xdist's WorkerController."""

    def __init__(self, index: int, config: FakeConfig, workers: int) -> None:
        self.gateway = type("Gateway", (), {"id": f"gw{index}"})()
        self.config = config
        self.workerinput: dict[str, object] = {"workercount": workers}
        schedule.pytest_configure_node(self)  # the role, as the controller gives it
        self.shutting_down = False
        self.sent: list[int] = []
        self.steals: list[list[int]] = []

    def send_runtest_some(self, indices: list[int]) -> None:
        self.sent.extend(indices)

    def send_steal(self, indices: list[int]) -> None:
        self.steals.append(list(indices))

    def shutdown(self) -> None:
        self.shutting_down = True


def _write_modules(root: Path) -> None:
    (root / "test_b.py").write_text("def test_b(): pass\n")
    (root / "test_h.py").write_text("import pytest\npytestmark = pytest.mark.cpu_heavy\n")
    (root / "test_r.py").write_text("import pytest\npytestmark = pytest.mark.e2e\n")


def _scheduler(tmp_path: Path, workers: int, roles: list[str]):
    """A :class:`RoleScheduling` over a collection whose tests have ``roles``, and its nodes."""
    ids = [f"test_{role[0]}.py::test_{i}" for i, role in enumerate(roles)]  # b, h or r
    return _scheduler_of(tmp_path, workers, ids)


def _scheduler_of(tmp_path: Path, workers: int, ids: list[str]):
    """A :class:`RoleScheduling` over the collection ``ids`` (of ``_write_modules``), its nodes."""
    _write_modules(tmp_path)
    config = FakeConfig(tmp_path, workers)
    sched = RoleScheduling(config)
    nodes = [FakeNode(i, config, workers) for i in range(workers)]
    for node in nodes:
        sched.add_node(node)
        sched.add_node_collection(node, ids)
    return sched, nodes


def _started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, roles: list[str]):
    """A 4-worker :class:`RoleScheduling` (default roles) that dealt its first tests."""
    monkeypatch.delenv(ROLES_ENV, raising=False)
    sched, nodes = _scheduler(tmp_path, 4, roles)
    sched.schedule()
    return sched, nodes


def _finish(sched: RoleScheduling, node: FakeNode, count: int) -> None:
    """``node`` runs the first ``count`` tests it has pending."""
    for i in list(sched.node2pending[node])[:count]:
        sched.mark_test_complete(node, i)


@pytest.mark.unit
def test_each_worker_gets_a_slice_of_its_own_roles_tests_and_steals_only_from_its_role(
    tmp_path, monkeypatch
):
    monkeypatch.delenv(ROLES_ENV, raising=False)
    roles = [REALTIME] * 12 + [HEAVY] * 4 + [BATCH] * 8 + [REALTIME] * 12
    sched, nodes = _scheduler(tmp_path, 6, roles)
    sched.schedule()

    # gw0 the heavy tests, gw1 the batch ones, four real-time workers 6 each, in order.
    assert nodes[0].sent == list(range(12, 16)) and nodes[1].sent == list(range(16, 24))
    rt = [*range(12), *range(24, 36)]
    assert [n.sent for n in nodes[2:]] == [rt[6 * k : 6 * k + 6] for k in range(4)]
    # A real-time worker that ran out steals from the real-time worker with the longest queue,
    # not from the batch worker, though its queue is longer.
    _finish(sched, nodes[2], 5)
    assert nodes[0].steals == nodes[1].steals == []
    ((donor, (stolen,)),) = [(n, n.steals) for n in nodes[3:] if n.steals]
    assert stolen == donor.sent[-3:]  # half of its queue, from the tail
    sched.remove_pending_tests_from_node(donor, stolen)
    assert nodes[2].sent[-3:] == stolen  # the stolen tests went to the idle real-time worker


@pytest.mark.unit
def test_a_worker_with_nothing_of_its_role_left_helps_with_batch_tests_never_the_reverse(
    tmp_path, monkeypatch
):
    sched, nodes = _started(tmp_path, monkeypatch, [HEAVY] * 2 + [BATCH] * 12 + [REALTIME] * 8)
    assert [n.sent for n in nodes] == [[0, 1], [*range(2, 14)], [*range(14, 18)], [*range(18, 22)]]

    _finish(sched, nodes[0], 1)  # the heavy worker, idle: it steals batch tests
    assert nodes[1].steals == [list(range(8, 14))]
    sched.remove_pending_tests_from_node(nodes[1], list(range(8, 14)))
    assert nodes[0].sent[2:] == list(range(8, 14))
    # The batch worker ran its own share, but unit tests wait on the heavy worker's queue: it
    # takes no call (and, with none of its own to run, ends).
    _finish(sched, nodes[1], 6)
    assert nodes[1].shutting_down and not nodes[2].steals and not nodes[3].steals


@pytest.mark.unit
def test_once_its_role_is_done_the_heavy_or_batch_worker_steals_calls(tmp_path, monkeypatch):
    roles = [HEAVY] * 2 + [BATCH] * 3 + [REALTIME] * 16
    sched, nodes = _started(tmp_path, monkeypatch, roles)
    assert [n.sent for n in nodes] == [[0, 1], [2, 3, 4], [*range(5, 13)], [*range(13, 21)]]

    # The batch worker reaches its last unit test (none waits elsewhere): it steals calls.
    _finish(sched, nodes[1], 2)
    assert nodes[2].steals == [list(range(9, 13))] and not nodes[3].steals
    sched.remove_pending_tests_from_node(nodes[2], list(range(9, 13)))
    assert nodes[1].sent[-4:] == list(range(9, 13))
    # Calls queued behind its last unit test are calls like any: an idle real-time worker takes
    # them from there, its longest queue, rather than wait for them.
    _finish(sched, nodes[3], 7)
    assert nodes[1].steals == [[11, 12]] and nodes[2].steals == [list(range(9, 13))]

    # The heavy worker reaches its last heavy test; the batch worker still has a unit test
    # queued, so it neither takes calls nor has any to give: the heavy one steals calls.
    sched, nodes = _started(tmp_path, monkeypatch, [HEAVY] * 2 + [BATCH] * 2 + roles[5:])
    assert not any(n.steals for n in nodes)
    _finish(sched, nodes[0], 1)
    assert nodes[2].steals == [list(range(8, 12))] and not nodes[1].steals
    sched.remove_pending_tests_from_node(nodes[2], list(range(8, 12)))
    assert nodes[0].sent == [0, 1, *range(8, 12)] and not nodes[0].shutting_down


@pytest.mark.unit
def test_a_run_of_unit_tests_alone_uses_every_worker(tmp_path, monkeypatch):
    sched, nodes = _started(tmp_path, monkeypatch, [BATCH] * 20)
    assert sorted(len(n.sent) for n in nodes) == [5, 5, 5, 5]


@pytest.mark.unit
def test_a_worker_with_nothing_left_in_its_role_ends_and_a_role_without_workers_is_run_by_any(
    tmp_path, monkeypatch
):
    roles = [HEAVY] * 2 + [BATCH] * 2 + [REALTIME] * 4
    sched, nodes = _started(tmp_path, monkeypatch, roles)
    assert [n.sent for n in nodes] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    _finish(sched, nodes[0], 2)
    assert nodes[0].shutting_down  # no heavy or batch test to take: it ends
    assert not any(n.shutting_down for n in nodes[1:])

    # The heavy worker crashed with its tests and was not replaced: a real-time worker runs them.
    sched, nodes = _scheduler(tmp_path, 4, roles)
    sched.schedule()
    crashed = sched.remove_node(nodes[0])
    assert crashed == "test_h.py::test_0"
    _finish(sched, nodes[2], 1)
    assert nodes[2].sent == [4, 5, 1]


@pytest.mark.unit
def test_the_worker_that_replaces_a_crashed_one_takes_its_role(tmp_path, monkeypatch):
    sched, nodes = _started(tmp_path, monkeypatch, [HEAVY] * 3 + [REALTIME] * 4)
    sched.remove_node(nodes[0])  # crashed while running test 0, with 1 and 2 to go
    replacement = FakeNode(4, sched.config, 4)
    assert replacement.workerinput[ROLE_KEY] == HEAVY
    sched.add_node(replacement)
    sched.add_node_collection(replacement, sched.collection)
    sched.schedule()
    assert replacement.sent == [1, 2]  # the heavy tests, on the new heavy worker alone
    assert FakeNode(5, sched.config, 4).workerinput[ROLE_KEY] == REALTIME  # no role owed


@pytest.mark.unit
def test_roles_apply_to_worksteal_with_four_workers_or_more(tmp_path, monkeypatch):
    monkeypatch.delenv(ROLES_ENV, raising=False)
    make = schedule.pytest_xdist_make_scheduler
    assert isinstance(make(FakeConfig(tmp_path, 10), None), RoleScheduling)
    assert make(FakeConfig(tmp_path, 3), None) is None  # xdist's own work stealing
    assert make(FakeConfig(tmp_path, 10, dist="load"), None) is None
    monkeypatch.setenv(ROLES_ENV, "0")
    assert make(FakeConfig(tmp_path, 10), None) is None


@pytest.mark.unit
def test_each_real_time_worker_starts_with_a_long_test_and_heavy_ones_run_on_one(
    tmp_path, monkeypatch
):
    # The workers' order (role_order) and the controller's dealing (RoleScheduling) agree.
    monkeypatch.delenv(ROLES_ENV, raising=False)
    _write_modules(tmp_path)
    names = [f"test_r.py::test_long{i}" for i in range(8)] + [
        *(f"test_r.py::test_short{i}" for i in range(30)),
        *(f"test_h.py::test_heavy{i}" for i in range(3)),
        *(f"test_b.py::test_unit{i}" for i in range(40)),
    ]
    secs = {f"test_r.py::test_long{i}": 20.0 + i for i in range(8)}
    secs["test_h.py::test_heavy0"] = 30.0
    ordered = [it.nodeid for it in role_order([Item(n) for n in names], secs, 10, tmp_path)]
    sched, nodes = _scheduler_of(tmp_path, 10, ordered)
    sched.schedule()

    assert [ordered[i] for i in nodes[0].sent] == [f"test_h.py::test_heavy{i}" for i in range(3)]
    assert all(ordered[i].startswith("test_b") for i in nodes[1].sent)
    firsts = sorted(ordered[n.sent[0]] for n in nodes[2:])
    assert firsts == sorted(f"test_r.py::test_long{i}" for i in range(8))
