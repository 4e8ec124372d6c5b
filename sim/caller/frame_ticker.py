"""One shared 20 ms ticker per process that sends every active call's next frame.

Calls are spread over ``slots`` phases of the 20 ms period (call *i* sends at
``t0 + k*20 ms + slot(i)*20 ms/slots``), so each wake-up sends for a small group of calls and no
call waits behind 199 others. The ticker wakes only for slots that hold calls (one call: 50
wake-ups a second, not 500: the other 450 cost a one-call test ~20 % of its CPU), and not at
all with no call. Lateness of every send is measured against its absolute deadline and kept in
a histogram: an overloaded generator must never pass for a slow server.

The ticker never waits for one call's socket: a send that would block (the server stopped reading
and the socket buffer is full, i.e. TCP backpressure) is finished in that call's own task, later
frames of that call queue behind it (counted in ``CallResult.frames_backpressured``), and every
other call keeps its deadlines. Awaiting such a send in the shared loop once stalled every call's
sends for up to 5 s while the server's core was saturated.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from sim.caller.core import CallerCore
from sim.caller.plan import FRAME_SECS

SendFn = Callable[[str], Awaitable[None]]


def start_send(coro: Coroutine[Any, Any, Any]) -> object | None:
    """Run ``coro`` up to its first suspension; the awaited object, or ``_DONE`` if it finished.

    A WebSocket send only suspends when the socket's buffer is full, so the common case costs no
    task and no loop iteration.
    """
    try:
        return coro.send(None)
    except StopIteration:
        return _DONE


_DONE = object()


async def finish_send(coro: Coroutine[Any, Any, Any], awaited: object) -> None:
    """Resume a coroutine started with :func:`start_send` that suspended on ``awaited``."""
    while True:
        try:
            if awaited is None:  # a bare ``yield``: give the loop one turn
                await asyncio.sleep(0)
            else:
                # a Task would clear this flag when handed the future; do the same, then wait
                if getattr(awaited, "_asyncio_future_blocking", False):
                    awaited._asyncio_future_blocking = False  # type: ignore[attr-defined]
                await awaited  # type: ignore[misc]
        except BaseException as e:
            try:
                awaited = coro.throw(e)
            except StopIteration:
                return
            continue
        try:
            awaited = coro.send(None)
        except StopIteration:
            return


@dataclass
class LatenessHistogram:
    """Send lateness in 0.1 ms bins up to 1 s (the last bin holds everything later)."""

    bins: list[int] = field(default_factory=lambda: [0] * 10001)
    count: int = 0
    max_ms: float = 0.0

    def add(self, late_secs: float) -> None:
        """Record one send that was ``late_secs`` after its deadline (negative counts as 0)."""
        ms = late_secs * 1000 if late_secs > 0 else 0.0
        self.bins[min(int(ms * 10), 10000)] += 1
        self.count += 1
        if ms > self.max_ms:
            self.max_ms = ms

    def merge(self, other: LatenessHistogram) -> None:
        """Add another histogram's counts into this one."""
        self.bins = [a + b for a, b in zip(self.bins, other.bins, strict=True)]
        self.count += other.count
        self.max_ms = max(self.max_ms, other.max_ms)

    def percentile(self, q: float) -> float | None:
        """Upper edge (ms) of the bin holding the ``q``-th percentile; None when empty."""
        if not self.count:
            return None
        target = self.count * q / 100.0
        acc = 0
        for i, n in enumerate(self.bins):
            acc += n
            if acc >= target and n:
                return min((i + 1) / 10.0, self.max_ms)
        return self.max_ms

    def summary(self) -> dict[str, float | int | None]:
        """``{"sends", "p50_ms", "p99_ms", "max_ms"}``."""
        return {
            "sends": self.count,
            "p50_ms": self.percentile(50),
            "p99_ms": self.percentile(99),
            "max_ms": round(self.max_ms, 3),
        }

    def to_sparse(self) -> dict[str, object]:
        """Compact form for passing between processes."""
        return {"bins": {i: n for i, n in enumerate(self.bins) if n}, "max_ms": self.max_ms}

    @classmethod
    def from_sparse(cls, d: dict[str, object]) -> LatenessHistogram:
        """Inverse of :meth:`to_sparse`."""
        h = cls()
        bins = d["bins"]
        assert isinstance(bins, dict)
        for i, n in bins.items():
            h.bins[int(i)] = int(n)
        h.count = sum(h.bins)
        max_ms = d["max_ms"]
        assert isinstance(max_ms, int | float)
        h.max_ms = float(max_ms)
        return h


@dataclass(eq=False)
class TickerEntry:
    """One call registered with the ticker."""

    core: CallerCore
    send: SendFn
    slot: int
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    error: BaseException | None = None
    backlog: deque[str] = field(default_factory=deque)
    flusher: asyncio.Task[None] | None = None


class FrameTicker:
    """Shared per-process sender: every ``period`` it runs ``on_tick`` for each registered call.

    Use as ``async with FrameTicker() as ticker: entry = ticker.add(core, ws.send_str)``.
    """

    def __init__(self, period_secs: float = FRAME_SECS, slots: int = 10) -> None:
        self.period = period_secs
        self.slots = slots
        self.lateness = LatenessHistogram()
        self._groups: list[set[TickerEntry]] = [set() for _ in range(slots)]
        self._slot_iter = itertools.cycle(range(slots))
        self._task: asyncio.Task[None] | None = None
        self._napping: asyncio.Future[bool] | None = None

    @property
    def active(self) -> int:
        """Number of calls currently registered."""
        return sum(len(g) for g in self._groups)

    async def __aenter__(self) -> FrameTicker:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start(self) -> None:
        """Start the ticker task on the running loop."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="loadgen:frame-ticker")

    async def stop(self) -> None:
        """Cancel the ticker task (and any blocked sends) and wait for them."""
        task, self._task = self._task, None
        pending = [e.flusher for g in self._groups for e in g if e.flusher is not None]
        for t in [task, *pending]:
            if t is not None:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t

    def add(self, core: CallerCore, send: SendFn) -> TickerEntry:
        """Register a call; its first frame goes out on its slot's next deadline."""
        entry = TickerEntry(core, send, next(self._slot_iter))
        self._groups[entry.slot].add(entry)
        if self._napping is not None:  # the ticker may sleep past this slot's next deadline
            _wake(self._napping, True)
        return entry

    def remove(self, entry: TickerEntry) -> None:
        """Unregister a call (idempotent) and wake anyone waiting on it.

        A send still blocked on that call's full socket is cancelled.
        """
        self._groups[entry.slot].discard(entry)
        entry.finished.set()
        f = entry.flusher
        if f is not None and not f.done() and f is not asyncio.current_task():
            f.cancel()

    def _send(self, entry: TickerEntry, msg: str) -> None:
        """Send now if the socket takes it; else queue behind the blocked send (its own task)."""
        if entry.flusher is not None and not entry.flusher.done():
            entry.backlog.append(msg)
            entry.core.res.frames_backpressured += 1
            return
        coro = entry.send(msg)
        awaited = start_send(coro)  # type: ignore[arg-type]
        if awaited is _DONE:
            return
        entry.core.res.frames_backpressured += 1
        entry.flusher = asyncio.create_task(
            self._flush(entry, coro, awaited),  # type: ignore[arg-type]
            name=f"loadgen:backpressure:{entry.core.res.call_sid}",
        )

    async def _flush(
        self, entry: TickerEntry, coro: Coroutine[Any, Any, Any], awaited: object
    ) -> None:
        try:
            await finish_send(coro, awaited)
            while entry.backlog:
                await entry.send(entry.backlog.popleft())
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a dead socket ends that call, never the ticker
            logger.debug("call {}: send failed: {!r}", entry.core.res.call_sid, e)
            entry.error = e
            self.remove(entry)

    async def _run(self) -> None:
        step = self.period / self.slots
        t0 = time.monotonic()
        tick = 0  # the last tick handled; tick k is due at t0 + k * step, for slot k % slots
        while True:
            ahead = next(
                (a for a in range(1, self.slots + 1) if self._groups[(tick + a) % self.slots]), 0
            )
            if not ahead:  # no call: sleep until one is added
                await self._nap(None)
                tick = max(tick, int((time.monotonic() - t0) / step))
                continue
            deadline = t0 + (tick + ahead) * step
            if await self._nap(deadline):  # a call was added: its slot may come sooner
                # Never past the tick napped for: woken after its deadline, it is still sent
                # (late, and its lateness counted), not skipped.
                now_tick = int((time.monotonic() - t0) / step)
                tick = max(tick, min(now_tick, tick + ahead - 1))
                continue
            tick += ahead
            for entry in list(self._groups[tick % self.slots]):
                now = time.monotonic()
                self.lateness.add(now - deadline)
                try:
                    for msg in entry.core.on_tick(now):
                        self._send(entry, msg)
                except Exception as e:  # a dead socket ends that call, never the ticker
                    logger.debug("call {}: send failed: {!r}", entry.core.res.call_sid, e)
                    entry.error = e
                    self.remove(entry)
                    continue
                late_ms = (now - deadline) * 1000
                if late_ms > entry.core.res.send_lateness_max_ms:
                    entry.core.res.send_lateness_max_ms = late_ms
                if entry.core.done:
                    self.remove(entry)

    async def _nap(self, deadline: float | None) -> bool:
        """Sleep until ``deadline`` (None: indefinitely); True if ``add`` woke it first."""
        delay = None if deadline is None else deadline - time.monotonic()
        if delay is not None and delay <= 0:
            return False
        loop = asyncio.get_running_loop()
        self._napping = nap = loop.create_future()
        timer = None if delay is None else loop.call_later(delay, _wake, nap, False)
        try:
            return bool(await nap)
        finally:
            self._napping = None
            if timer is not None:
                timer.cancel()


def _wake(nap: asyncio.Future[bool], early: bool) -> None:
    if not nap.done():
        nap.set_result(early)
