"""Calls held by ``voicebot serve --workers 2`` on 2 cores against one process on 1 core.

``python -m sim.bench.scale`` climbs load levels (``sim.bench.levels.run_server``: all of a
level's calls start within ``--ramp`` and stay ``--hold`` seconds while the bot talks; held =
no failed call, bot-frame gap p99 under 60 ms, ≥ 99.9 % of bot audio delivered and the
generator's send lateness p99 under 5 ms) against:

1. **one process** (``voicebot serve``) pinned to ``--server-core`` (1);
2. **two workers** (``voicebot serve --workers 2``: Gunicorn's master and two workers sharing
   the port) on cores 0 and 1 (``taskset -c 0,1``).

Both against the same separate emulator process (tone replies at 1.5× real time, limits on)
and the same load generator (``voicebot loadtest``, the hold scenario on a −44 dBFS pink line by
default, ``--lines``), both pinned to ``--load-core`` (0) at nice −5. On a 2-core machine the
generator and the emulator therefore share core 0 with one of the two workers, ahead of it: the
2-worker figure is a floor, and the report says so, with the generator's lateness at each
level. Where a third core exists, ``--load-core 2 --server-cores 0,1`` keeps them apart.

CPU and memory of the 2-worker server are the master's and its workers' summed
(``ProcTree``). Prints the calls held by each and their ratio, and writes ``scale.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from sim.bench.levels import run_server
from sim.bench.lines import parse_lines, write_hold
from sim.bench.procs import (
    BIN,
    EMULATOR_PACE,
    OPS_PORT_OFFSET,
    REPO,
    Proc,
    _http_ok,
    _wait_for,
    cpu_secs,
    rss_mb,
    start_emulator,
    start_server,
)
from sim.caller.line_spec import LineNoiseSpec

# The load generator and the emulator run at this nice level (root only; else as they are): on
# a core shared with a worker they keep their 20 ms deadlines, so what is measured is the
# server on what CPU is left, not a late generator.
LOAD_NICE = -5


def _renice(pid: int, nice: int) -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, pid, nice)
    except OSError:
        pass  # not root: the generator's lateness check still says whether a level counts


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


class ProcTree(Proc):
    """A process and its children (Gunicorn's master and workers): CPU and RSS summed."""

    def pids(self) -> list[int]:
        """The master's PID and its children's."""
        return [self.pid, *_children(self.pid)]

    def cpu_secs(self) -> float:
        """User + system CPU seconds of the master and its workers."""
        total = 0.0
        for pid in self.pids():
            with contextlib.suppress(OSError):  # a worker gone meanwhile
                total += cpu_secs(pid)
        return total

    def rss_mb(self) -> float:
        """Resident memory of the master and its workers, in MB."""
        total = 0.0
        for pid in self.pids():
            with contextlib.suppress(OSError):  # a worker gone meanwhile
                total += rss_mb(pid)
        return total


def start_workers(
    port: int, workers: int, emulator: Proc, log_dir: Path, cores: str, uvloop: bool
) -> ProcTree:
    """``voicebot serve --workers N`` on ``cores``, pointed at the emulator, records on."""
    env = {
        "GEMINI_API_KEY": "bench",
        "GEMINI_BASE_URL": emulator.info["url"],
        "GEMINI_CA_FILE": emulator.info["ca_file"],
        "VOICEBOT_MAX_CALLS": "100000",
        "VOICEBOT_LAG_GUARD_MS": "0",
        "VOICEBOT_LOG_LEVEL": "WARNING",
        "VOICEBOT_OPS_TOKEN": "",
        "VOICEBOT_PEER_URL": "",
        "VOICEBOT_DATABASE_URL": f"sqlite:///{(log_dir / 'workers-calls.db').resolve()}",
    }
    cmd = [str(BIN / "voicebot"), "serve", "--port", str(port), "--workers", str(workers)]
    cmd += ["--ops-port", f"127.0.0.1:{port + OPS_PORT_OFFSET}"]
    cmd += ["--uvloop"] if uvloop else []
    name = f"workers{workers}"
    log = log_dir / f"{name}.log"
    with log.open("wb") as fh:
        popen = subprocess.Popen(
            ["taskset", "-c", cores, *cmd],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            cwd=REPO,
        )
    tree = ProcTree(name=name, popen=popen, log=log, port=port)
    ops = f"http://127.0.0.1:{port + OPS_PORT_OFFSET}"

    def all_up() -> bool:
        if not _http_ok(f"http://127.0.0.1:{port}/healthz"):
            return False
        try:
            with urllib.request.urlopen(f"{ops}/stats", timeout=2) as r:
                return bool(json.loads(r.read())["workers_up"] == workers)
        except OSError:
            return False

    _wait_for(tree, all_up, f"start {workers} workers")
    tree.info["ops_url"] = ops
    return tree


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(
        prog="python -m sim.bench.scale", description=__doc__.split("\n")[0]
    )
    p.add_argument("--one", default="90,110,130,150", help="levels for one process")
    p.add_argument("--two", default="130,160,190,220", help="levels for two workers")
    p.add_argument("--lines", default="-44", help="the callers' line (one level in dBFS)")
    p.add_argument("--hold", type=float, default=20.0, help="seconds each call stays up")
    p.add_argument("--ramp", type=float, default=10.0, help="seconds to start a level's calls")
    p.add_argument("--server-core", type=int, default=1, help="core of the single process")
    p.add_argument("--server-cores", default="0,1", help="cores of the workers")
    p.add_argument("--load-core", type=int, default=0, help="core of generator + emulator")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--uvloop", action="store_true")
    p.add_argument("--port", type=int, default=19600, help="first port (uses 2, +100, +101…)")
    p.add_argument("--out", type=Path, default=REPO / "bench-report" / "scale")
    p.set_defaults(load_nice=LOAD_NICE)  # run_level starts each level's generator niced
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run both servers' levels and print calls held and their ratio."""
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    line = parse_lines(args.lines, LineNoiseSpec(), 60.0)[0]
    scenario = write_hold(args.out, line, args.hold)
    load = os.getloadavg()
    conditions = {
        "cpus": os.cpu_count(),
        "line": line.text,
        "emulator": f"tone replies at {EMULATOR_PACE:g}x real time, limits on",
        "generator_and_emulator_core": args.load_core,
        "generator_and_emulator_nice": LOAD_NICE,
        "one_process_core": args.server_core,
        "worker_cores": args.server_cores,
        "hold_secs": args.hold,
        "ramp_secs": args.ramp,
        "load_avg_at_start": [round(x, 2) for x in load],
    }
    print(f"conditions: {json.dumps(conditions)}", flush=True)
    result: dict[str, Any] = {"conditions": conditions}
    emulator = start_emulator(args.out, args.load_core, tone_secs=args.hold + 60)
    for task in Path(f"/proc/{emulator.pid}/task").iterdir():
        _renice(int(task.name), LOAD_NICE)
    try:
        one = start_server(
            args.port, emulator, args.out, args.server_core, args.uvloop, lag_guard_ms=0,
            name="one",
        )  # fmt: skip
        try:
            levels = [int(x) for x in args.one.split(",")]
            result["one"] = run_server(args, one, levels, scenario, False, "one")
        finally:
            one.stop()
        time.sleep(3.0)
        two = start_workers(
            args.port + 1, args.workers, emulator, args.out, args.server_cores, args.uvloop
        )
        try:
            levels = [int(x) for x in args.two.split(",")]
            result["two"] = run_server(args, two, levels, scenario, False, "two")
        finally:
            two.stop()
    finally:
        emulator.stop()
    held_one, held_two = result["one"]["held"], result["two"]["held"]
    result["ratio"] = round(held_two / held_one, 2) if held_one else None
    (args.out / "scale.json").write_text(json.dumps(result, indent=2))
    print(
        f"\ncalls held: 1 process on core {args.server_core}: {held_one}; "
        f"{args.workers} workers on cores {args.server_cores}: {held_two}; "
        + (
            f"ratio {result['ratio']}\n"
            if result["ratio"] is not None
            else "ratio not measured (one process held none of its levels)\n"
        )
        + f"  CPU per call (% of a core): {result['one'].get('cpu_per_call_pct', 0):.2f} vs "
        f"{result['two'].get('cpu_per_call_pct', 0):.2f}; memory per call (MB): "
        f"{result['one'].get('mem_per_call_mb', 0):.2f} vs "
        f"{result['two'].get('mem_per_call_mb', 0):.2f}\n"
        f"  generator + emulator on core {args.load_core}"
        + (" (shared with a worker)" if str(args.load_core) in args.server_cores else "")
        + f"; {line.text}; report {args.out / 'scale.json'}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
