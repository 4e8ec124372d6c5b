"""The shared frame ticker: one call's full socket must not hold up every other call's frames.

The fast call's deadlines are judged against what the whole process lost meanwhile: the
emulator's loop-lag sampler (``sim.emulator.stats``), run on the same loop, records the worst
wake-up delay, so a machine that did not run the process for a while (a 6-worker suite on 2
cores) is not taken for a ticker held up by a slow socket, which would delay the ticker by the
whole block (300 ms) and not the sampler.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from sim.caller.core import CallerCore
from sim.caller.frame_ticker import FrameTicker
from sim.caller.plan import CallPlan
from sim.emulator.stats import LoopLagSampler

pytestmark = [pytest.mark.unit, pytest.mark.timed]  # real timers: runs with the calls


PROBE_SECS = 0.005


def core(sid: str) -> CallerCore:
    t0 = time.monotonic()
    c = CallerCore(CallPlan().pause(10), t0=t0, call_sid=sid, account_sid="AC", stream_sid="MZ")
    c.open(time.monotonic())
    return c


async def test_a_blocked_socket_delays_only_its_own_call() -> None:
    sent: dict[str, list[str]] = {"fast": [], "slow": []}
    unblock = asyncio.Event()

    async def fast(msg: str) -> None:
        sent["fast"].append(msg)

    async def slow(msg: str) -> None:  # like ws.send_str waiting for a full socket to drain
        await unblock.wait()
        sent["slow"].append(msg)

    probe = LoopLagSampler(PROBE_SECS)
    probe.start()
    async with FrameTicker(period_secs=0.02, slots=2) as ticker:
        ticker.add(core("CAslow"), slow)
        entry = ticker.add(core("CAfast"), fast)
        await asyncio.sleep(0.3)
        late_ms = ticker.lateness.max_ms
        await asyncio.sleep(2 * PROBE_SECS)  # the sampler wakes from a stall at the end
        await probe.stop()
        stalled_ms = probe.summary()["max_ms"]
        assert len(sent["fast"]) >= 10 and sent["slow"] == []
        slow_core = next(e.core for g in ticker._groups for e in g if e is not entry)
        assert slow_core.res.frames_backpressured >= 10
        assert ticker.lateness.percentile(99) is not None
        # The fast call kept its deadlines, but for what the process lost to the machine.
        assert late_ms < 20 + stalled_ms, (late_ms, stalled_ms)
        unblock.set()
        await asyncio.sleep(0.05)
        n_slow = len(sent["slow"])
        assert n_slow >= slow_core.res.frames_backpressured  # the queue went out, in order
        chunks = [int(m.split('"chunk":"')[1].split('"')[0]) for m in sent["slow"]]
        assert chunks == sorted(chunks) and chunks[0] == 1


class CountingTicker(FrameTicker):
    """Counts the ticker's sleeps (one per wake-up)."""

    naps = 0

    async def _nap(self, deadline: float | None) -> bool:
        self.naps += 1
        return await super()._nap(deadline)


async def test_the_ticker_wakes_only_for_slots_with_calls() -> None:
    sent: list[float] = []

    async def send(_msg: str) -> None:
        sent.append(time.monotonic())

    async with CountingTicker(period_secs=0.02, slots=10) as ticker:
        await asyncio.sleep(0.1)
        assert ticker.naps == 1  # no call: one sleep, until a call is added
        added = time.monotonic()
        ticker.add(core("CAone"), send)
        await asyncio.sleep(0.5)
        naps, elapsed = ticker.naps, time.monotonic() - added
    # One call: a frame per 20 ms (~25 in 0.5 s; a late ticker catches up), a wake-up per frame,
    # not one per slot (~250).
    assert 20 <= len(sent) <= elapsed / 0.02 + 2, (len(sent), elapsed)
    assert naps <= len(sent) + 3, (naps, len(sent))


def senders(sent: dict[str, list[float]], name: str):
    """A send function that notes when each of ``name``'s frames went."""
    sent[name] = []

    async def send(_msg: str) -> None:
        sent[name].append(time.monotonic())

    return send


async def test_a_call_added_while_the_ticker_sleeps_sends_on_its_own_slot() -> None:
    sent: dict[str, list[float]] = {}
    async with FrameTicker(period_secs=0.4, slots=2) as ticker:  # slots 200 ms apart
        ticker.add(core("CAa"), senders(sent, "a"))  # slot 0: due 400, 800 ms after the start
        await asyncio.sleep(0.05)  # the ticker now sleeps toward slot 0's 400 ms
        added = time.monotonic()
        ticker.add(core("CAb"), senders(sent, "b"))  # slot 1: due at 200 ms, before slot 0
        await asyncio.sleep(0.6)
    first_b = sent["b"][0] - added
    # On its slot's next deadline (~150 ms later), not after the sleep it was added in (~550 ms).
    assert first_b < 0.35, f"slot 1's first frame came {first_b * 1000:.0f} ms after it was added"
    assert len(sent["b"]) >= 2  # and then once a period (200 and 600 ms)


async def test_a_call_added_as_another_is_due_costs_that_one_no_frame() -> None:
    """Woken by ``add`` after the deadline it slept toward, the ticker still sends that tick."""
    sent: dict[str, list[float]] = {}
    async with FrameTicker(period_secs=0.1, slots=2) as ticker:
        ticker.add(core("CAa"), senders(sent, "a"))  # slot 0
        await asyncio.sleep(0.13)  # a's first frame: ~100 ms after the start
        assert sent["a"], "no frame yet"
        # Just before a's next deadline: add b, then hold the loop past that deadline, so the
        # ticker wakes for the add only once the deadline it slept toward has gone by.
        await asyncio.sleep(max(0.0, sent["a"][0] + 0.1 - 0.01 - time.monotonic()))
        ticker.add(core("CAb"), senders(sent, "b"))
        time.sleep(0.03)  # noqa: ASYNC251 (the stall is the point)
        await asyncio.sleep(0.25)
    gaps = [round(b - a, 3) for a, b in zip(sent["a"], sent["a"][1:], strict=False)]
    assert len(gaps) >= 3 and max(gaps) < 0.17, gaps  # no tick of a's skipped (a 200 ms gap)
