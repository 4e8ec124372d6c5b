"""Small, contained patches to Pipecat 1.14's per-frame hot path (opt-in: ``install()``).

* ``FrameProcessor.__internal_push_frame`` runs ``logger.trace(f"Pushing {frame} ... {self}")``
  for every frame pushed, and the f-string is built even when TRACE is off: for audio frames
  that is ``format_pts`` plus a six-field format, ~1.6 us per push, 100+ pushes per call per
  second. Audio frames here get a ``__str__`` that returns their precomputed name (as every
  other frame's log line starts with it); nothing else changes.
* ``BaseOutputTransport.MediaSender._next_frame`` (no mixer) waits for every 40 ms output chunk
  with ``asyncio.wait_for(queue.get(), 3)``, which creates a task per chunk. The replacement
  takes a queued chunk at once when there is one and otherwise waits under
  ``asyncio.timeout`` (no task); what it yields and when it reports the bot stopped are the
  same. With a mixer, Pipecat's own generator runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    OutputAudioRawFrame,
    TTSAudioRawFrame,
)
from pipecat.transports import base_output
from pipecat.transports.base_output import BaseOutputTransport

_PATCHED = False
_FRAMES = (InputAudioRawFrame, OutputAudioRawFrame, TTSAudioRawFrame)
_pipecat_next_frame = BaseOutputTransport.MediaSender._next_frame
_pipecat_str = {cls: cls.__dict__.get("__str__") for cls in _FRAMES}


def _name_only(self: object) -> str:
    return self.name  # type: ignore[attr-defined,no-any-return]


async def _without_mixer(sender: Any, stop_secs: float) -> AsyncGenerator[Frame, None]:
    """Pipecat's ``without_mixer`` generator without a task per frame."""
    while True:
        queue = sender._audio_queue
        try:
            frame = queue.get_nowait()
        except asyncio.QueueEmpty:
            try:
                async with asyncio.timeout(stop_secs):
                    frame = await queue.get()
            except TimeoutError:
                # Fallback: the bot stopped speaking if nothing came for a while.
                await sender._bot_stopped_speaking()
                continue
        await sender._filter_audio(frame)
        sender._apply_volume(frame)
        yield frame
        queue.task_done()


def _next_frame(self: Any) -> AsyncGenerator[Frame, None]:
    if self._mixer:
        return _pipecat_next_frame(self)  # type: ignore[no-any-return]
    return _without_mixer(self, base_output.BOT_VAD_STOP_FALLBACK_SECS)


def install() -> None:
    """Apply the patches (idempotent)."""
    global _PATCHED
    if _PATCHED:
        return
    for cls in _FRAMES:
        cls.__str__ = _name_only  # type: ignore[method-assign,assignment]
    BaseOutputTransport.MediaSender._next_frame = _next_frame  # type: ignore[method-assign]
    _PATCHED = True


def uninstall() -> None:
    """Restore Pipecat's own methods (idempotent)."""
    global _PATCHED
    for cls, original in _pipecat_str.items():
        if original is None:
            if "__str__" in cls.__dict__:
                del cls.__str__
        else:
            cls.__str__ = original  # type: ignore[method-assign]
    BaseOutputTransport.MediaSender._next_frame = _pipecat_next_frame  # type: ignore[method-assign]
    _PATCHED = False
