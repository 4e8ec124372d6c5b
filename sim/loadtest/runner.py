"""Many simulated callers at once: N calls, C at a time, in one or K generator processes.

Each process shares one aiohttp session and one :class:`FrameTicker` (all sends, on absolute 20 ms
deadlines) and runs one reader task per call. ``run_load`` returns every call's record, the merged
send-lateness histogram, the concurrency held over time and the generator's own CPU use.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import queue
import random
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sim.caller.frame_ticker import FrameTicker, LatenessHistogram
from sim.loadtest.host_load import CpuSampler, quiet_gc
from sim.loadtest.scenario import Scenario

ProgressFn = Callable[[str, dict[str, Any] | None], None]
"""Called with ("start", None) when a call starts and ("end", record) when it ends."""

SAMPLE_SECS = 0.25


@dataclass
class LoadConfig:
    """What to run (picklable: it is sent to worker processes)."""

    url: str
    scenario: Scenario
    calls: int
    concurrency: int
    ramp_secs: float = 0.0
    auth_token: str | None = None
    persona: str | None = None
    workers: int = 1
    seed: int | None = None
    use_uvloop: bool = False
    server_pid: int | None = None
    tune_gc: bool = True
    nice: int | None = None


@dataclass
class LoadOutcome:
    """Everything measured during a run."""

    records: list[dict[str, Any]] = field(default_factory=list)
    lateness: LatenessHistogram = field(default_factory=LatenessHistogram)
    concurrency: list[tuple[float, int]] = field(default_factory=list)
    wall_secs: float = 0.0
    cpu_secs: float = 0.0
    workers: int = 1
    gc: dict[str, Any] = field(default_factory=dict)
    host: dict[str, Any] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        """Picklable, compact form for returning from a worker."""
        return {
            "records": self.records,
            "lateness": self.lateness.to_sparse(),
            "concurrency": self.concurrency,
            "wall_secs": self.wall_secs,
            "cpu_secs": self.cpu_secs,
            "gc": self.gc,
        }

    @classmethod
    def merge(cls, parts: list[dict[str, Any]]) -> LoadOutcome:
        """Combine worker outcomes (concurrency samples are summed per time bucket)."""
        out = cls(workers=len(parts))
        buckets: dict[int, int] = {}
        for p in parts:
            out.records.extend(p["records"])
            out.lateness.merge(LatenessHistogram.from_sparse(p["lateness"]))
            for t, n in p["concurrency"]:
                k = round(t / SAMPLE_SECS)
                buckets[k] = buckets.get(k, 0) + n
            out.wall_secs = max(out.wall_secs, p["wall_secs"])
            out.cpu_secs += p["cpu_secs"]
            out.gc = _merge_gc(out.gc, p.get("gc") or {})
        out.concurrency = [(k * SAMPLE_SECS, n) for k, n in sorted(buckets.items())]
        out.records.sort(key=lambda r: r["index"])
        return out


def _merge_gc(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    if not a or not b:
        return dict(a or b)
    return {
        "collections": [x + y for x, y in zip(a["collections"], b["collections"], strict=True)],
        "pause_max_ms": max(a["pause_max_ms"], b["pause_max_ms"]),
        "pause_total_ms": round(a["pause_total_ms"] + b["pause_total_ms"], 1),
    }


def _cpu_secs() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def run_calls(
    cfg: LoadConfig, indices: list[int], progress: ProgressFn | None = None, concurrency: int = 0
) -> LoadOutcome:
    """Run the calls numbered ``indices`` in this process, ``concurrency`` at a time."""
    import aiohttp

    from sim.caller.driver import place_call

    concurrency = concurrency or cfg.concurrency
    out = LoadOutcome()
    t_start, cpu_start = time.monotonic(), _cpu_secs()
    active = 0
    sem = asyncio.Semaphore(concurrency)
    rng = random.Random(cfg.seed)
    cfg.scenario.prepare()  # audio, line noise and speech mixes before the clock matters

    async def one(i: int) -> None:
        nonlocal active
        try:
            active += 1
            if progress:
                progress("start", None)
            plan = cfg.scenario.build_plan(random.Random(rng.random()))
            started = time.monotonic() - t_start
            res = await place_call(
                cfg.url, plan, auth_token=cfg.auth_token, persona=cfg.persona,
                session=session, ticker=ticker,
            )  # fmt: skip
            rec = res.to_dict()
            rec.update(index=i, started_secs=round(started, 3))
            out.records.append(rec)
            if progress:
                progress("end", rec)
        finally:
            active -= 1
            sem.release()

    async def sample() -> None:
        while True:
            out.concurrency.append((round(time.monotonic() - t_start, 3), active))
            await asyncio.sleep(SAMPLE_SECS)

    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    gc_ctx = quiet_gc() if cfg.tune_gc else contextlib.nullcontext(None)
    with gc_ctx as gc_stats:
        async with aiohttp.ClientSession(connector=connector) as session, FrameTicker() as ticker:
            await _run_all(cfg, indices, concurrency, sem, one, sample, t_start)
            out.lateness = ticker.lateness
        if gc_stats is not None:
            out.gc = gc_stats.summary()
    out.concurrency.append((round(time.monotonic() - t_start, 3), 0))
    out.wall_secs = time.monotonic() - t_start
    out.cpu_secs = _cpu_secs() - cpu_start
    return out


async def _run_all(
    cfg: LoadConfig,
    indices: list[int],
    concurrency: int,
    sem: asyncio.Semaphore,
    one: Callable[[int], Any],
    sample: Callable[[], Any],
    t_start: float,
) -> None:
    """Start the calls (ramping the first ``concurrency`` starts) and wait for all of them."""
    sampler = asyncio.create_task(sample(), name="loadgen:concurrency-sampler")
    try:
        async with asyncio.TaskGroup() as tg:
            for n, i in enumerate(indices):
                await sem.acquire()
                if cfg.ramp_secs and n < concurrency:
                    delay = t_start + cfg.ramp_secs * n / concurrency - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                tg.create_task(one(i), name=f"loadgen:call-{i}")
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler


def _set_nice(nice: int | None) -> None:
    """Raise (negative) or lower this process's CPU priority; a shared core then serves it first.

    Raises:
        PermissionError: a negative value without CAP_SYS_NICE (run as root or drop --nice).
    """
    if nice is not None:
        os.setpriority(os.PRIO_PROCESS, 0, nice)


def _run_async(coro_fn: Callable[[], Any], use_uvloop: bool) -> Any:
    loop_factory = None
    if use_uvloop:
        try:
            import uvloop

            loop_factory = uvloop.new_event_loop
        except ImportError:
            loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(coro_fn())


def _worker(cfg: LoadConfig, indices: list[int], conc: int, q: Any) -> None:
    def progress(kind: str, rec: dict[str, Any] | None) -> None:
        q.put(("progress", kind, rec))

    try:
        _set_nice(cfg.nice)
        outcome = _run_async(lambda: run_calls(cfg, indices, progress, conc), cfg.use_uvloop)
        q.put(("done", outcome.to_wire(), None))
    except BaseException as e:  # report, never hang the parent
        q.put(("error", f"{type(e).__name__}: {e}", None))
        raise


def run_load(cfg: LoadConfig, progress: ProgressFn | None = None) -> LoadOutcome:
    """Run the whole load test (blocking); ``cfg.workers`` > 1 spreads calls over processes.

    The host's CPU is sampled meanwhile (``outcome.host``: load on the generator's cores that was
    not the generator's, and the server's CPU when ``cfg.server_pid`` is set).
    """
    _set_nice(cfg.nice)
    with CpuSampler(cfg.server_pid) as sampler:
        out = _run_load(cfg, progress)
    cpu_pct = 100 * out.cpu_secs / out.wall_secs if out.wall_secs else None
    out.host = sampler.summary(cpu_pct)
    return out


def _run_load(cfg: LoadConfig, progress: ProgressFn | None) -> LoadOutcome:
    if cfg.workers <= 1:
        return _run_async(lambda: run_calls(cfg, list(range(cfg.calls)), progress), cfg.use_uvloop)
    k = min(cfg.workers, cfg.calls)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    shares = [list(range(w, cfg.calls, k)) for w in range(k)]
    concs = [cfg.concurrency // k + (1 if w < cfg.concurrency % k else 0) for w in range(k)]
    procs = []
    for w in range(k):
        wcfg = LoadConfig(**{**cfg.__dict__, "seed": None if cfg.seed is None else cfg.seed + w})
        p = ctx.Process(
            target=_worker, args=(wcfg, shares[w], max(1, concs[w]), q), name=f"loadgen-{w}"
        )
        p.start()
        procs.append(p)
    parts: list[dict[str, Any]] = []
    errors: list[str] = []
    try:
        while len(parts) + len(errors) < k:
            try:
                kind, a, b = q.get(timeout=1.0)
            except queue.Empty:
                if not any(p.is_alive() for p in procs) and q.empty():
                    errors.append("a worker process died without reporting")
                    break
                continue
            if kind == "progress" and progress:
                progress(a, b)
            elif kind == "done":
                parts.append(a)
            elif kind == "error":
                errors.append(a)
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join()
    if errors:
        raise RuntimeError("load generator worker failed: " + "; ".join(errors))
    merged = LoadOutcome.merge(parts)
    merged.workers = k
    return merged


def now_stamp() -> str:
    """Wall-clock timestamp for reports."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
