"""The shared frame ticker: one call's full socket must not hold up every other call's frames.

The fast call's deadlines are judged against what the whole process lost meanwhile: a probe
task on the same loop records its own worst wake-up delay, so a machine that did not run the
process for a while (a 6-worker suite on 2 cores) is not taken for a ticker held up by a slow
socket, which would delay the ticker by the whole block (300 ms) and not the probe.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from sim.caller.core import CallerCore
from sim.caller.frame_ticker import FrameTicker
from sim.caller.plan import CallPlan

pytestmark = pytest.mark.unit


PROBE_SECS = 0.005


async def worst_wake_up_ms(into: list[float]) -> None:
    """Record the loop's worst lateness waking from short sleeps into ``into[0]`` (ms)."""
    while True:
        asked = time.monotonic() + PROBE_SECS
        await asyncio.sleep(PROBE_SECS)
        into[0] = max(into[0], (time.monotonic() - asked) * 1000)


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

    stalled = [0.0]
    probe = asyncio.create_task(worst_wake_up_ms(stalled))
    async with FrameTicker(period_secs=0.02, slots=2) as ticker:
        ticker.add(core("CAslow"), slow)
        entry = ticker.add(core("CAfast"), fast)
        await asyncio.sleep(0.3)
        probe.cancel()
        assert len(sent["fast"]) >= 10 and sent["slow"] == []
        slow_core = next(e.core for g in ticker._groups for e in g if e is not entry)
        assert slow_core.res.frames_backpressured >= 10
        assert ticker.lateness.percentile(99) is not None
        # The fast call kept its deadlines, but for what the process lost to the machine.
        assert ticker.lateness.max_ms < 20 + stalled[0], (ticker.lateness.max_ms, stalled)
        unblock.set()
        await asyncio.sleep(0.05)
        n_slow = len(sent["slow"])
        assert n_slow >= slow_core.res.frames_backpressured  # the queue went out, in order
        chunks = [int(m.split('"chunk":"')[1].split('"')[0]) for m in sent["slow"]]
        assert chunks == sorted(chunks) and chunks[0] == 1
