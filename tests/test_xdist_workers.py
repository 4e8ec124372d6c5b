"""How the suite runs: forked workers (tests/forkserver.py), the schedule (tests/schedule.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.forkserver import FORKSERVER_UNSAFE_NOTE, _code_of
from tests.schedule import lpt_order, slices
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
