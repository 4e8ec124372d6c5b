"""Call setups take turns through the setup gate (no sockets)."""

from __future__ import annotations

import asyncio

import pytest

from pipelines.call.setup_gate import SetupGate

pytestmark = [pytest.mark.unit, pytest.mark.timed]  # real timers: runs with the calls


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


async def test_spare_setups_wait_behind_calls_on_the_line_until_promoted() -> None:
    # Warm opens (spare) take a place only when no caller on the line waits for one; a warm
    # open whose stream arrived (promoted) goes ahead of the other spare ones.
    gate = SetupGate(concurrency=1, max_hold_secs=10)
    first = await gate.enter()
    order: list[str] = []

    async def wait(name: str, ticket) -> None:
        slot = await ticket.wait()
        order.append(name)
        slot.release()

    spare_a = gate.ticket(spare=True)
    spare_b = gate.ticket(spare=True)
    tasks = [
        asyncio.create_task(wait("spare_a", spare_a)),
        asyncio.create_task(wait("spare_b", spare_b)),
    ]
    urgent = gate.ticket()
    tasks.append(asyncio.create_task(wait("urgent", urgent)))
    spare_b.promote()
    await asyncio.sleep(0)
    assert gate.waiting == 3 and order == []
    first.release()
    await asyncio.gather(*tasks)
    assert order == ["urgent", "spare_b", "spare_a"]
    assert gate.held == 0 and gate.waiting == 0


async def test_a_waiter_that_goes_away_gives_its_place_back() -> None:
    gate = SetupGate(concurrency=1, max_hold_secs=10)
    first = await gate.enter()
    waiter = asyncio.create_task(gate.enter(spare=True))
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    first.release()
    assert gate.held == 0 and gate.waiting == 0
    slot = await asyncio.wait_for(gate.enter(), 0.5)  # the place is free again
    slot.release()
