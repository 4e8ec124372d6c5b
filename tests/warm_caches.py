"""Write the bytecode caches the test workers read, before they start (``make test`` runs this).

Each xdist worker imports every test module, and pytest rewrites the asserts of each one unless
its rewritten bytecode is already in ``tests/__pycache__``: about 3.8 CPU-s per worker for
~110 modules, measured on this project's 2-core machine. Our own packages are compiled from
source in every process (the ``voicebot serve`` processes tests start included) unless their
``__pycache__`` exists. Environments that set ``PYTHONDONTWRITEBYTECODE`` (CI's does) never
write either cache, so every run paid ~25 CPU-s of its two cores to compile the same files six
times. This writes both once, in two processes at once (half the test modules each); the
workers then only read them (reading is not affected by the variable). ``__pycache__`` is
git-ignored.

Failures here are not reported: the test run that follows collects the same files and says
what is wrong with them.
"""

from __future__ import annotations

import compileall
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "pipelines", "sim", "tests")


def main() -> int:
    """Warm the caches; always 0 (the test run reports what cannot be collected)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    tests = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py"))
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
