"""Conversation state (what session resumption restores) and task cancellation."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass
class Conversation:
    """What a session has heard and said: restored by a session-resumption handle.

    ``started_at`` (``time.monotonic()``) is when the session's first connection was set up:
    the session limit counts from it across resumptions.
    """

    caller_turns: int = 0
    replies: int = 0
    context_audio_secs: float = 0.0
    context_text_tokens: int = 0
    history: list[str] = field(default_factory=list)
    started_at: float | None = None

    def copy(self) -> Conversation:
        """A snapshot independent of further changes."""
        return replace(self, history=list(self.history))


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel a task and wait for it, re-raising only our own cancellation."""
    if task is None or task.done():
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
