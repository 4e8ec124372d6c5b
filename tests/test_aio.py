import asyncio

import pytest
from loguru import logger

from pipelines.aio import cancel_and_wait

pytestmark = pytest.mark.unit


async def test_cancel_and_wait_ends_tasks_and_logs_their_errors():
    async def forever():
        await asyncio.sleep(3600)

    async def broken():
        raise RuntimeError("boom")

    lines: list[str] = []
    sink = logger.add(lines.append, level="ERROR", format="{message}")
    try:
        sleeping = asyncio.create_task(forever(), name="sleeper")
        failing = asyncio.create_task(broken(), name="breaker")
        await asyncio.sleep(0)
        await cancel_and_wait(sleeping, None, failing)
    finally:
        logger.remove(sink)
    assert sleeping.cancelled()
    assert failing.done()
    assert len(lines) == 1 and lines[0].startswith("task breaker failed\n")
    assert "RuntimeError: boom" in lines[0]


async def test_cancel_and_wait_propagates_its_own_cancellation():
    async def stubborn():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(3600)  # ignores the first cancel

    inner = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    outer = asyncio.create_task(cancel_and_wait(inner))
    await asyncio.sleep(0.01)
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    inner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await inner


async def test_wait_then_cancel_lets_a_quick_task_finish_and_cancels_a_slow_one():
    from pipelines.aio import wait_then_cancel

    quick = asyncio.create_task(asyncio.sleep(0.01, result="done"))
    assert await wait_then_cancel(quick, 1.0) is True
    assert quick.result() == "done"

    slow = asyncio.create_task(asyncio.sleep(10))
    assert await wait_then_cancel(slow, 0.05) is False
    assert slow.cancelled()
    assert await wait_then_cancel(None, 0.0) is True
