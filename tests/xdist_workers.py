"""How the suite's xdist workers start and end (a pytest plugin, loaded by ``conftest.py``).

Both ends of a worker's life used to cost whole seconds of the run, all workers at once on the
machine's two cores (measured with eight workers):

- **Start**: each worker, a fresh interpreter, imported the same code (~1.5 CPU-s) before
  collecting, and so did the controller (through ``conftest.py``) though it runs no test: the
  first test began ~9 s after ``pytest`` was started. Now the controller starts one fork
  server (``tests/forkserver.py``) that imports the modules the test modules import, once, and
  each worker is a fork of it (``--tx popen//python=<launcher>``); ``conftest.py`` imports the
  lab only in its fixtures. The first test begins ~3 s in. A worker is still a separate
  process with its own interpreter state, collection, event loops and fixtures; what it shares
  is the imported modules' pages, copy-on-write. Off with ``VOICEBOT_FORK_WORKERS=0`` or when
  any ``--tx`` is not a plain ``popen``; where the server cannot be reached or cannot fork
  safely, each launcher becomes a plain ``python`` (no worker is lost, only the saving).
- **End**: the interpreter's exit collected the whole heap a worker had built (every module,
  every test's leftovers): ~6 s between the last test and pytest's summary. A worker now
  freezes its heap (``gc.freeze``) as its last exit handler runs, after pytest's own final
  collections (which report unraisable exceptions) and before the interpreter's: memory is
  returned by the process's exit either way. Under 1 s now.
- **In between**: the fork server freezes the imported heap (``gc.freeze``) before it forks,
  and each worker freezes what its collection added before its first test. The servers the
  tests start (``bot.gc_policy``) keep a heap frozen before them frozen: a full collection in
  a test walks what the tests made since, not every module. Each worker's first test used to
  stop its calls for a walk of the whole heap (~0.2 CPU-s, 0.6 s with eight workers at once)
  and later full collections took 0.3-1.5 s under load.
"""

from __future__ import annotations

import atexit
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.forkserver import FORK_UNSAFE

TESTS = Path(__file__).resolve().parent
FORKSERVER = TESTS / "forkserver.py"
# Modules the test modules import at their top (scanned from their text) and these, which the
# conftest and the end-to-end tests need in every worker; and google-genai's Live types built
# (each server builds them as it starts; done once here, no worker builds them again).
ALWAYS = (
    "sim.testing",
    "bot.server",
    "hypothesis",
    "hypothesis.strategies",
    "pipelines.gemini.live_types:build_live_types",
)
# Not preloaded: the fork-unsafe modules and what imports them (Pipecat's Silero imports
# onnxruntime); a worker imports them itself, as before.
NOT_PRELOADED = (*FORK_UNSAFE, "pipecat.audio.vad.silero")
_IMPORT = re.compile(r"^(?:from|import)\s+([A-Za-z_][\w.]*)", re.MULTILINE)
READY_TIMEOUT_SECS = 5.0


def preload_modules(folder: Path = TESTS) -> list[str]:
    """What the fork server imports: every top-level import of the test modules, ours last."""
    names: dict[str, None] = dict.fromkeys(ALWAYS)
    for path in sorted(folder.glob("*.py")):
        for name in _IMPORT.findall(path.read_text(encoding="utf-8")):
            if name != "__future__" and not name.startswith(("tests", *NOT_PRELOADED)):
                names[name] = None
    return list(names)


def _fork_workers_wanted(config: pytest.Config) -> bool:
    tx = config.getoption("tx", None) or []
    return (
        bool(tx)
        and all(spec == "popen" for spec in tx)
        and os.environ.get("VOICEBOT_FORK_WORKERS", "1") != "0"
        and sys.platform == "linux"
    )


def _start_fork_server(config: pytest.Config) -> None:
    folder = tempfile.mkdtemp(prefix="voicebot-forkserver-")
    path = os.path.join(folder, "socket")
    server = subprocess.Popen(
        [sys.executable, "-u", str(FORKSERVER), "serve", path, *preload_modules()],
        cwd=config.rootpath,
        stdin=subprocess.DEVNULL,
    )

    def stop() -> None:
        server.terminate()
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(folder, ignore_errors=True)

    config.add_cleanup(stop)
    deadline = time.monotonic() + READY_TIMEOUT_SECS
    while not os.path.exists(path):  # it binds before importing: this takes milliseconds
        if server.poll() is not None or time.monotonic() > deadline:
            return  # workers start as plain interpreters
        time.sleep(0.005)
    launcher = f"{sys.executable} -S {FORKSERVER} launch {path}"
    config.option.tx = [f"popen//python={launcher}"] * len(config.option.tx)


def _freeze_at_exit() -> None:
    # Registered late, so it runs before the exit handlers registered at import; pytest's own
    # final collection ran before (in its unconfigure), the interpreter's would run after.
    atexit.register(gc.freeze)


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    """On the controller, start the fork server and point xdist's workers at it."""
    if getattr(config, "workerinput", None) is not None:
        return
    if _fork_workers_wanted(config):
        _start_fork_server(config)


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """On a worker, once its tests are collected: freeze the heap they will all share."""
    if getattr(session.config, "workerinput", None) is not None:
        gc.collect()
        gc.freeze()


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """On a worker, after pytest's own end: skip the interpreter's walk of the heap at exit."""
    if getattr(config, "workerinput", None) is not None:
        _freeze_at_exit()
