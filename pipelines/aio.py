"""Small asyncio helpers shared by the server, the pipeline and the emulator."""

from __future__ import annotations

import asyncio

from loguru import logger


async def cancel_and_wait(*tasks: asyncio.Task | None) -> None:
    """Cancel ``tasks`` and wait until every one has ended.

    Errors the tasks raised are logged, not raised; a cancellation of the caller itself
    still propagates.
    """
    live = [t for t in tasks if t is not None]
    for task in live:
        if not task.done():
            task.cancel()
    results = await asyncio.gather(*live, return_exceptions=True)
    for task, result in zip(live, results, strict=True):
        if isinstance(result, Exception):
            logger.opt(exception=result).error(f"task {task.get_name()} failed")


async def wait_then_cancel(task: asyncio.Task | None, timeout_secs: float) -> bool:
    """Let ``task`` finish for up to ``timeout_secs``, then cancel it and wait for its end.

    Returns:
        True when it finished in time (or there was no task), False when it was cancelled.
    """
    if task is None:
        return True
    done, _ = await asyncio.wait({task}, timeout=timeout_secs)
    if done:
        return True
    await cancel_and_wait(task)
    return False
