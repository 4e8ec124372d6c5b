"""Is the load generator's result trustworthy? Host CPU sampling and garbage-collector control.

Two things other than the server under test make a load generator send late:

- other processes on the generator's cores (a shared machine: someone else's server or load test
  pinned to the same core). :class:`CpuSampler` reads ``/proc/stat`` and ``/proc/PID/stat``
  (Linux only; elsewhere it reports nothing) and gives the load on the generator's cores that was
  not the generator's own, and the server's CPU when its PID is known.
- the generator's own full garbage collections (one gen-2 pass over ~50k objects stalled the
  event loop for ~14 ms). :func:`quiet_gc` freezes everything allocated before the calls start
  (the long-lived objects) and makes full collections rare, and :class:`GcStats` records the
  longest pause so a report can show it.
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

GC_THRESHOLDS = (20_000, 50, 1000)
"""gen0 allocations between young collections; gen1 and gen2 multipliers (default 700, 10, 10)."""


def _core_times() -> dict[int, tuple[int, int]]:
    """``{core: (busy ticks, total ticks)}`` from ``/proc/stat`` (empty when unavailable)."""
    out: dict[int, tuple[int, int]] = {}
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("cpu") and line[3].isdigit():
                    name, *vals = line.split()
                    v = [int(x) for x in vals]
                    idle = v[3] + (v[4] if len(v) > 4 else 0)
                    out[int(name[3:])] = (sum(v) - idle, sum(v))
    except OSError:
        return {}
    return out


def _pid_ticks(pid: int) -> int | None:
    """User + system clock ticks used by ``pid`` so far; None when it is gone or unreadable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None


def _stats(samples: list[float]) -> dict[str, float] | None:
    if not samples:
        return None
    s = sorted(samples)
    return {
        "mean": round(sum(s) / len(s), 1),
        "p90": round(s[min(len(s) - 1, int(len(s) * 0.9))], 1),
        "max": round(s[-1], 1),
    }


class CpuSampler:
    """Samples core and process CPU in a background thread (use as a context manager).

    Args:
        server_pid: the server's PID when it runs on this machine (its CPU and cores are sampled).
        interval_secs: sampling period.
    """

    def __init__(self, server_pid: int | None = None, interval_secs: float = 0.5) -> None:
        self.server_pid = server_pid
        self.interval = interval_secs
        self.gen_cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        self.server_cores: list[int] = []
        if server_pid is not None and hasattr(os, "sched_getaffinity"):
            with contextlib.suppress(OSError):
                self.server_cores = sorted(os.sched_getaffinity(server_pid))
        self.gen_busy: list[float] = []
        self.server_busy: list[float] = []
        self.server_cpu: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._first: dict[int, tuple[int, int]] = {}
        self._last: dict[int, tuple[int, int]] = {}
        self._tck = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def __enter__(self) -> CpuSampler:
        self._first = _core_times()
        self._thread = threading.Thread(target=self._run, name="loadgen:cpu-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._last = _core_times()

    def _run(self) -> None:
        prev, prev_pid, prev_t = _core_times(), self._server_ticks(), time.monotonic()
        while not self._stop.wait(self.interval):
            cur, cur_pid, now = _core_times(), self._server_ticks(), time.monotonic()
            self.gen_busy.append(_busy_pct(prev, cur, self.gen_cores))
            if self.server_cores:
                self.server_busy.append(_busy_pct(prev, cur, self.server_cores))
            if cur_pid is not None and prev_pid is not None:
                self.server_cpu.append(100 * (cur_pid - prev_pid) / self._tck / (now - prev_t))
            prev, prev_pid, prev_t = cur, cur_pid, now

    def _server_ticks(self) -> int | None:
        return None if self.server_pid is None else _pid_ticks(self.server_pid)

    def summary(self, generator_cpu_pct: float | None) -> dict[str, Any]:
        """Figures for the report's ``meta``; CPU in % of one core.

        ``foreign_load_pct``: busy time of the generator's cores over the run minus the
        generator's own CPU (other processes sharing its cores), in % of one core.
        """
        out: dict[str, Any] = {"generator_cores": self.gen_cores}
        if not self._first or not self._last or not self.gen_cores:
            return out
        busy = sum(self._last[c][0] - self._first[c][0] for c in self.gen_cores)
        total = sum(self._last[c][1] - self._first[c][1] for c in self.gen_cores)
        if total:
            busy_pct = 100 * len(self.gen_cores) * busy / total  # % of one core
            out["generator_cores_busy_pct"] = round(busy_pct, 1)
            if generator_cpu_pct is not None:
                out["foreign_load_pct"] = round(max(0.0, busy_pct - generator_cpu_pct), 1)
        out["generator_cores_busy_samples_pct"] = _stats(self.gen_busy)
        if self.server_pid is not None:
            out["server_pid"] = self.server_pid
            out["server_cores"] = self.server_cores
            out["server_cpu_pct"] = _stats(self.server_cpu)
            out["server_cores_busy_pct"] = _stats(self.server_busy)
        return out


def _busy_pct(
    prev: dict[int, tuple[int, int]], cur: dict[int, tuple[int, int]], cores: list[int]
) -> float:
    """Busy % of ``cores`` between two samples, in % of one core (so 2 full cores = 200)."""
    busy = sum(cur[c][0] - prev[c][0] for c in cores if c in cur and c in prev)
    total = sum(cur[c][1] - prev[c][1] for c in cores if c in cur and c in prev)
    return 100 * len(cores) * busy / total if total else 0.0


@dataclass
class GcStats:
    """Garbage-collector passes seen while installed: count and pause per generation."""

    collections: list[int] = field(default_factory=lambda: [0, 0, 0])
    pause_max_ms: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    pause_total_ms: float = 0.0
    _t: float = 0.0

    def callback(self, phase: str, info: dict[str, int]) -> None:
        """``gc.callbacks`` hook."""
        if phase == "start":
            self._t = time.perf_counter()
            return
        ms = (time.perf_counter() - self._t) * 1000
        g = info["generation"]
        self.collections[g] += 1
        self.pause_total_ms += ms
        self.pause_max_ms[g] = max(self.pause_max_ms[g], ms)

    def summary(self) -> dict[str, Any]:
        """``{"collections": [g0, g1, g2], "pause_max_ms": ..., "pause_total_ms": ...}``."""
        return {
            "collections": list(self.collections),
            "pause_max_ms": round(max(self.pause_max_ms), 2),
            "pause_total_ms": round(self.pause_total_ms, 1),
        }


@contextlib.contextmanager
def quiet_gc(thresholds: tuple[int, int, int] = GC_THRESHOLDS) -> Iterator[GcStats]:
    """Collect once, freeze what exists, raise the thresholds, record pauses; restore on exit."""
    stats = GcStats()
    old = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)
    gc.callbacks.append(stats.callback)
    try:
        yield stats
    finally:
        gc.callbacks.remove(stats.callback)
        gc.set_threshold(*old)
        gc.unfreeze()
