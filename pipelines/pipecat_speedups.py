"""Small, contained patches to Pipecat 1.14's per-frame hot path (installed once per process).

``FrameProcessor.__internal_push_frame`` runs ``logger.trace(f"Pushing {frame} ... {self}")``
for every frame pushed, and the f-string is built even when TRACE is off: for audio frames
that is ``format_pts`` plus a six-field format, ~1.6 us per push, 100+ pushes per call per
second. Audio frames here get a ``__str__`` that returns their precomputed name (as every other
frame's log line starts with it); nothing else changes.
"""

from __future__ import annotations

from pipecat.frames.frames import (
    InputAudioRawFrame,
    OutputAudioRawFrame,
    TTSAudioRawFrame,
)

_PATCHED = False


def _name_only(self: object) -> str:
    return self.name  # type: ignore[attr-defined,no-any-return]


def install() -> None:
    """Apply the patches (idempotent)."""
    global _PATCHED
    if _PATCHED:
        return
    for cls in (InputAudioRawFrame, OutputAudioRawFrame, TTSAudioRawFrame):
        cls.__str__ = _name_only  # type: ignore[method-assign,assignment]
    _PATCHED = True
