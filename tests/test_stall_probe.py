"""The opt-in stall probe: long loop callbacks are timed one by one, short ones are not."""

from __future__ import annotations

import asyncio
import asyncio.events
import time

import pytest

from bot.stall_probe import StallProbe
from bot.stats import STATS

pytestmark = pytest.mark.unit


async def _run_soon(block_secs: float) -> None:
    done = asyncio.get_running_loop().create_future()

    def callback() -> None:
        time.sleep(block_secs)  # the stall under test
        done.set_result(None)

    asyncio.get_running_loop().call_soon(callback)
    await done


async def test_probe_records_each_long_callback_and_only_while_installed() -> None:
    STATS.slow_callbacks.reset()
    original = asyncio.events.Handle._run
    probe = StallProbe(STATS.slow_callbacks.add_secs)
    assert probe.install()
    assert probe.installed
    try:
        await _run_soon(0.006)
        await _run_soon(0.0)
        await asyncio.sleep(0.001)
    finally:
        probe.uninstall()
    assert asyncio.events.Handle._run is original
    summary = STATS.slow_callbacks.summary()
    assert summary["count"] >= 1
    assert summary["max"] >= 6.0
    await _run_soon(0.006)
    assert STATS.slow_callbacks.summary() == summary  # uninstalled: no longer timed
    STATS.slow_callbacks.reset()
