"""Three kinds of test, each on its own xdist workers, so the calls keep their cores.

The suite holds kinds of test that want different things from the machine's two cores:

- **real time** (``e2e`` or ``timed``, and not ``cpu_heavy``): a call over loopback that mostly
  waits on 20 ms audio frames, ~0.1 of a core, and asserts on timing (a 100 ms hole, a 1 s
  barge-in); or a unit test that waits on real timers and bounds how long something took;
- **heavy** (``cpu_heavy``): most of a core for seconds (the fuzzers, fifty calls through a
  proxy, ``voicebot serve`` processes), some with a call of their own to time (the fuzzers'
  neighbour call may hear no hole over 100 ms);
- **batch** (the rest, most unit tests): a core for as long as each runs, ~15 CPU-s in all,
  and nothing they assert depends on when they get a core.

Dealt like the rest, unit tests ran on all ten workers at once and each took a core while
it ran, the heavy chain competing with them; the calls on the same cores woke late. With four
workers or more, worker ``gw0`` runs the heavy tests one after another, ``gw1`` the batch tests
one after another, and the rest the real-time tests: at most one unit test and one heavy test
want a core at a time, which leaves the calls theirs. Once its kind is done, the heavy or batch
worker takes calls too. (The batch worker at Linux's ``SCHED_IDLE`` was tried: a starved unit
test then missed its 5 s wait while the calls' servers started, in a clean CI run.)
``tests/schedule.py`` deals each kind to its own workers. ``VOICEBOT_TEST_ROLES=0`` turns this
off (every worker runs anything).

A test's kind is read from the test modules' text (``pytestmark`` and ``@pytest.mark``
decorators of top-level functions and classes), because xdist's controller, which deals the
tests, sees only node ids. ``tests/test_xdist_workers.py`` checks that reading against the
markers pytest collected, for every test of the run (under ``make test``, the whole suite).
"""

from __future__ import annotations

import ast
import functools
import os
from pathlib import Path

REALTIME = "realtime"
HEAVY = "heavy"
BATCH = "batch"
ROLE_KEY = "voicebot_role"
ROLES_ENV = "VOICEBOT_TEST_ROLES"
MIN_WORKERS = 4  # one heavy, one batch, two or more real-time


def worker_roles(workers: int) -> list[str]:
    """Each worker's role (``gw0`` first), or none: every worker runs anything."""
    if workers < MIN_WORKERS or os.environ.get(ROLES_ENV, "1") == "0":
        return []
    return [HEAVY, BATCH] + [REALTIME] * (workers - 2)


def role_of_worker(index: int, workers: int) -> str | None:
    """The role of worker ``gw<index>`` of ``workers`` (a replacement past them: real time)."""
    roles = worker_roles(workers)
    if not roles:
        return None
    return roles[index] if index < len(roles) else REALTIME


def role_of_markers(names: set[str]) -> str:
    """A test's role from the names of its markers."""
    if "cpu_heavy" in names:
        return HEAVY
    return REALTIME if names & {"e2e", "timed"} else BATCH


def _mark_names(node: ast.expr) -> set[str]:
    """Marker names in ``pytest.mark.x``, ``pytest.mark.x(...)`` or a list/tuple of those."""
    if isinstance(node, ast.List | ast.Tuple):
        return set().union(*(_mark_names(e) for e in node.elts))
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
        if node.value.attr == "mark":
            return {node.attr}
    return set()


@functools.cache
def _module_marks(path: Path) -> tuple[frozenset[str], dict[str, frozenset[str]]]:
    """A test module's own markers, and each top-level function's or class's."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    module: set[str] = set()
    defs: dict[str, frozenset[str]] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytestmark" for t in stmt.targets
        ):
            module |= _mark_names(stmt.value)
        elif isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defs[stmt.name] = frozenset().union(*(_mark_names(d) for d in stmt.decorator_list))
    return frozenset(module), defs


def role_of_nodeid(nodeid: str, rootdir: Path) -> str:
    """The role of the test ``nodeid`` (``path::name[params]``), read from its module's text."""
    path, _, rest = nodeid.partition("::")
    name = rest.split("::", 1)[0].split("[", 1)[0]
    try:
        module, defs = _module_marks((rootdir / path).resolve())
    except (OSError, SyntaxError):
        return BATCH  # not a test module pytest could import either
    return role_of_markers(set(module | defs.get(name, frozenset())))
