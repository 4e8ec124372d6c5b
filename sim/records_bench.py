"""What call records cost the server: write time per record and event-loop stalls at 100 calls.

In process, like ``sim.testing`` (and unlike ``sim.bench``, which drives the server only as a
separate process): it runs the server's own records code, ``bot.records``.

    python -m sim.records_bench [--calls 100] [--turns 24] [--database-url URL | --postgres]

100 calls end within ``--spread`` seconds (default 1 s, at random moments, as in a busy
minute); each hands its record (the journal of ``--turns`` turns of realistic length, fed
through ``pipelines.call.journal.CallJournal`` as a call feeds it, then ``summarise_call`` and
``RecordWriter.submit``, exactly what ``bot.media_stream`` does at a call's end) to the real
writer, which writes them into SQLite (default, a temporary file) or PostgreSQL
(``--postgres`` starts one from the system's binaries, ``sim.postgres``). Meanwhile a probe
task measures the event loop's lag every 2 ms; the same probe runs first with no records
(the baseline). Printed: the writer's time and the process CPU per record, the time a call's
end spends building and queueing its record, and the loop lag (p50, p99, max) with and without.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import statistics
import tempfile
import time
from types import SimpleNamespace
from typing import Any

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)

from bot.records.database import Database, database_url
from bot.records.writer import RecordWriter
from pipelines.call.journal import CallJournal

PROBE_SECS = 0.002
SENTENCE = "Our opening hours are nine to five on weekdays and ten to two on Saturdays."


class LagProbe:
    """Samples how late a ``PROBE_SECS`` sleep wakes up (the loop's stall), in ms."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(PROBE_SECS)
            self.samples.append(max(0.0, (loop.time() - t - PROBE_SECS) * 1000))

    def start(self) -> None:
        """Start sampling."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> dict[str, float]:
        """Stop; p50, p99, max of the lag in ms."""
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        s = sorted(self.samples) or [0.0]
        return {
            "p50": statistics.median(s),
            "p99": s[min(len(s) - 1, int(len(s) * 0.99))],
            "max": s[-1],
            "n": float(len(s)),
        }


def fake_call(n: int, turns: int) -> Any:
    """A finished call as ``summarise_call`` reads it: a journal fed like a real call's."""
    clock = SimpleNamespace(now=0.0)
    journal = CallJournal(started=0.0, clock=lambda: clock.now, stop_lag_secs=0.8)
    for t in range(turns):
        clock.now += 2.0
        if t % 2:
            journal.observe(UserStartedSpeakingFrame())
            journal.caller_said(f"Caller sentence {t} of call {n}: could you tell me when?")
            clock.now += 1.5
            journal.observe(UserStoppedSpeakingFrame())
        else:
            for word in SENTENCE.split(" "):
                journal.bot_said(word + " ")
            journal.observe(BotStartedSpeakingFrame())
            clock.now += 3.0
            journal.observe(BotStoppedSpeakingFrame())
        journal.model_usage({"prompt": 900 + t, "response": 120, "response_audio": 100})
    conn = SimpleNamespace(handovers=1, connections=2)
    return SimpleNamespace(
        journal=journal, llm=SimpleNamespace(connection=conn), rejection=None, setup_secs=0.4
    )


async def bench(url: str, calls: int, turns: int, spread: float) -> dict[str, Any]:
    """Run the benchmark against ``url`` (an async URL); the figures."""
    db = Database(url)
    writer = RecordWriter(db)
    writer.start()
    while not writer.migrated:  # noqa: ASYNC110 (the writer exposes no event for it)
        await asyncio.sleep(0.01)
    info = [
        SimpleNamespace(call_sid=f"CA{i:032x}", stream_sid=f"MZ{i:032x}",
                        caller="+15551230123", called="+15005550006")
        for i in range(calls)
    ]  # fmt: skip
    made = [fake_call(i, turns) for i in range(calls)]  # built before: the calls' own work
    # The server keeps long-lived objects out of the collector's way (bot.gc_policy); so does
    # this: the stalls measured are the records path's, not a sweep over the fake calls.
    gc.collect()
    gc.freeze()

    probe = LagProbe()
    probe.start()
    await asyncio.sleep(max(1.0, spread))
    baseline = await probe.stop()

    end_costs: list[float] = []

    async def end(i: int) -> None:
        await asyncio.sleep(random.uniform(0, spread))
        t = time.perf_counter()
        writer.call_ended(info[i], "frontdesk", 60.0, "caller hung up", made[i], {})
        end_costs.append(time.perf_counter() - t)

    probe = LagProbe()
    cpu0, wall0, write0 = time.process_time(), time.perf_counter(), writer.stats()["write_secs"]
    probe.start()
    await asyncio.gather(*(end(i) for i in range(calls)))
    assert await writer.flushed(60), writer.stats()
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - wall0
    lag = await probe.stop()
    stats = writer.stats()
    await writer.stop()
    await db.close()
    gc.unfreeze()
    return {
        "calls": calls,
        "turns": turns,
        "written": stats["written"],
        "writer_ms_per_record": (stats["write_secs"] - write0) * 1000 / calls,
        "cpu_ms_per_record": cpu * 1000 / calls,
        "call_end_ms_p50": statistics.median(end_costs) * 1000,
        "call_end_ms_max": max(end_costs) * 1000,
        "wall_secs": wall,
        "lag_ms": lag,
        "baseline_lag_ms": baseline,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(prog="python -m sim.records_bench", description=__doc__)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--turns", type=int, default=24)
    parser.add_argument("--spread", type=float, default=1.0, help="seconds the calls end within")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--postgres", action="store_true", help="a temporary PostgreSQL server")
    args = parser.parse_args(argv)
    pg = None
    with tempfile.TemporaryDirectory() as tmp:
        raw = args.database_url or f"sqlite:///{tmp}/bench-calls.db"
        if args.postgres:
            from sim.postgres import TempPostgres

            pg = TempPostgres()
            raw = pg.start()
        try:
            url = database_url(raw)
            assert url is not None, "records are off"
            r = asyncio.run(bench(url, args.calls, args.turns, args.spread))
        finally:
            if pg is not None:
                pg.stop()
    where = "PostgreSQL" if args.postgres else url.split(":", 1)[0]
    print(f"records benchmark: {r['calls']} calls x {r['turns']} turns ending within "
          f"{args.spread:g} s, {where}; {r['written']} written in "
          f"{r['wall_secs']:.2f} s")  # fmt: skip
    print(f"  writer time per record      {r['writer_ms_per_record']:.3f} ms")
    print(f"  process CPU per record      {r['cpu_ms_per_record']:.3f} ms (all work, probe too)")
    print(f"  call end (build + queue)    p50 {r['call_end_ms_p50']:.3f} ms, "
          f"max {r['call_end_ms_max']:.3f} ms")  # fmt: skip
    for name, lag in (("with records", r["lag_ms"]), ("baseline", r["baseline_lag_ms"])):
        print(f"  loop lag {name:<13}    p50 {lag['p50']:.2f} ms, p99 {lag['p99']:.2f} ms, "
              f"max {lag['max']:.2f} ms ({int(lag['n'])} samples)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
