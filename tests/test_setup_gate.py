"""Call setups take turns through the setup gate (no sockets)."""

from __future__ import annotations

import asyncio

import pytest

from pipelines.call.setup_gate import SetupGate

pytestmark = pytest.mark.unit


async def test_setups_beyond_the_limit_wait_for_a_release() -> None:
    gate = SetupGate(concurrency=2, max_hold_secs=10.0)
    a = await gate.enter()
    b = await gate.enter()
    third = asyncio.create_task(gate.enter(), name="third-setup")
    await asyncio.sleep(0.01)
    assert not third.done()
    a.release()
    a.release()  # idempotent: frees one place only
    c = await asyncio.wait_for(third, 1.0)
    fourth = asyncio.create_task(gate.enter(), name="fourth-setup")
    await asyncio.sleep(0.01)
    assert not fourth.done()
    b.release()
    d = await asyncio.wait_for(fourth, 1.0)
    c.release()
    d.release()


async def test_a_slot_is_given_back_after_max_hold() -> None:
    gate = SetupGate(concurrency=1, max_hold_secs=0.05)
    await gate.enter()  # never released by its holder
    slot = await asyncio.wait_for(gate.enter(), 1.0)
    slot.release()
