"""Write the bytecode caches the test workers read, before they start (``make test`` runs this).

Each xdist worker imports every test module, and pytest rewrites the asserts of each one unless
its rewritten bytecode is already in ``tests/__pycache__``: about 3.8 CPU-s per worker for
~110 modules, measured on this project's 2-core machine. Our own packages are compiled from
source in every process (the ``voicebot serve`` processes tests start included) unless their
``__pycache__`` exists. Environments that set ``PYTHONDONTWRITEBYTECODE`` (CI's does) never
write either cache, so every run paid ~25 CPU-s of its two cores to compile the same files six
times. This writes both once, in two processes at once (half the test modules each); the
workers then only read them (reading is not affected by the variable). Only the test modules
whose rewritten bytecode is missing or stale are collected, so a warm tree costs ~0.2 s.
``__pycache__`` is git-ignored.

Failures here are not reported: the test run that follows collects the same files and says
what is wrong with them.
"""

from __future__ import annotations

import compileall
import functools
import importlib.util
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "pipelines", "sim", "tests")


@functools.cache
def _rewritten_tag() -> str:
    """The tag of pytest's rewritten bytecode files (``cpython-311-pytest-9.2.0``)."""
    return f"{sys.implementation.cache_tag}-pytest-{metadata.version('pytest')}"


def rewritten_is_fresh(source: Path) -> bool:
    """Whether pytest's rewritten bytecode of ``source`` is there and matches its text.

    pytest writes checked-hash pycs (PEP 552): the header holds the source's hash, which is
    what it compares, so a fresh checkout's new mtimes do not make them stale.
    """
    cached = source.parent / "__pycache__" / f"{source.stem}.{_rewritten_tag()}.pyc"
    try:
        with open(cached, "rb") as f:
            header = f.read(16)
    except OSError:
        return False
    return (
        header[:4] == importlib.util.MAGIC_NUMBER
        and header[8:16] == importlib.util.source_hash(source.read_bytes())[:8]
    )


def main() -> int:
    """Warm the caches; always 0 (the test run reports what cannot be collected)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    sources = [*(ROOT / "tests").glob("test_*.py"), ROOT / "tests" / "conftest.py"]
    # Only the stale ones: collecting costs two pytest start-ups (~5 CPU-s) even when all is cached.
    stale = sorted(str(p.relative_to(ROOT)) for p in sources if not rewritten_is_fresh(p))
    tests = [t for t in stale if Path(t).name.startswith("test_")]
    if stale and not tests:  # only conftest.py changed: collecting any one module rewrites it
        tests = ["tests/test_layering.py"]
    collect = [sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider"]
    procs = [
        subprocess.Popen(
            [*collect, *half],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for half in (tests[0::2], tests[1::2])
        if half
    ]
    for proc in procs:
        proc.wait()
    # What collection did not import (CLI commands, benchmarks): plain bytecode.
    sys.dont_write_bytecode = False
    for package in PACKAGES:
        compileall.compile_dir(ROOT / package, quiet=1, workers=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
