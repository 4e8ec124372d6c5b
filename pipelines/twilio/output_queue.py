"""The output's queue of bot audio and in-order frames: one entry per run of audio.

Gemini sends a reply faster than real time, so it waits at the output for seconds. Pipecat's
output cuts it into one frame per 40 ms chunk and queues them all: about 1.1 KB and two
garbage-collected objects per 40 ms per call; with 150 calls tens of thousands of such frames
are alive at once and every young-generation collection walks them (measured 12-17 ms per
collection at 140 calls, 54 ms for the next generation), which every caller hears.

``OutputQueue`` keeps whole chunks of output-rate audio as one frame per run (its ``audio`` a
``bytearray`` that grows while the frame waits), between the other frames that must leave
after the audio before them (marks, ``TTSStoppedFrame``, transcripts), in arrival order. Less
than a chunk waits in ``pending`` until more audio comes or ``end_run`` pads it to a chunk
(end of a reply). A frame the writer has taken is never extended. ``drop_interruptible`` is
what a barge-in does to it: only uninterruptible entries stay. Our own deque and event: no
``asyncio.Queue`` internals, no task or timer per entry.
"""

from __future__ import annotations

import asyncio
from collections import deque

from pipecat.frames.frames import Frame, OutputAudioRawFrame


class OutputQueue:
    """Bot audio as runs of whole chunks, and the frames between them, in order.

    Args:
        sample_rate: Output sample rate (Hz) of the audio put in.
        chunk_bytes: Bytes of one output chunk; runs only ever hold whole chunks.
        num_channels: Channels of the output audio.
    """

    def __init__(self, sample_rate: int, chunk_bytes: int, num_channels: int = 1) -> None:
        """Create an empty queue; see the class docstring for the arguments."""
        if chunk_bytes <= 0:
            raise ValueError(f"OutputQueue: chunk_bytes must be > 0, got {chunk_bytes}")
        self.sample_rate = sample_rate
        self.chunk_bytes = chunk_bytes
        self.num_channels = num_channels
        self._items: deque[Frame] = deque()
        self._ready = asyncio.Event()
        # The run at the tail that may still grow, and the class of the audio it holds.
        self._open: OutputAudioRawFrame | None = None
        # Output-rate audio waiting to fill a chunk, with the flag and class of its frames.
        self.pending = bytearray()
        self._pending_interruptible = True
        self._pending_cls: type[OutputAudioRawFrame] = OutputAudioRawFrame

    def __len__(self) -> int:
        """Entries waiting (runs and frames; ``pending`` excluded)."""
        return len(self._items)

    def put_audio(self, audio: bytes, cls: type[OutputAudioRawFrame], interruptible: bool) -> None:
        """Add output-rate audio from a frame of class ``cls``; whole chunks become queued.

        Args:
            audio: 16-bit PCM at ``sample_rate``.
            cls: The class of the frame it came from (the run is built as one).
            interruptible: That frame's flag. Audio of both kinds in one chunk makes the chunk
                uninterruptible, as Pipecat's chunking does.
        """
        if not audio:
            return
        pending = self.pending
        if pending:
            self._pending_interruptible = self._pending_interruptible and interruptible
        else:
            self._pending_interruptible = interruptible
        self._pending_cls = cls
        pending.extend(audio)
        whole = len(pending) - len(pending) % self.chunk_bytes
        if whole:
            self._queue_run(pending[:whole])
            del pending[:whole]

    def end_run(self, tail: bytes = b"") -> None:
        """The end of a reply: queue ``tail`` (the resampler's) and ``pending``, padded.

        The tail joins the audio it ends (same flag and class); what is left past the last
        whole chunk is padded with silence to a chunk, so it plays before what follows.
        """
        if tail:
            if not self.pending:
                self._pending_interruptible = True
            self.pending.extend(tail)
        if not self.pending:
            return
        short = -len(self.pending) % self.chunk_bytes
        self.pending.extend(bytes(short))
        self._queue_run(self.pending)
        self.pending = bytearray()

    def _queue_run(self, audio: bytes | bytearray) -> None:
        cls, interruptible = self._pending_cls, self._pending_interruptible
        tail = self._open
        if (
            tail is not None
            and self._items
            and self._items[-1] is tail
            and type(tail) is cls
            and tail.interruptible == interruptible
        ):
            grown = tail.audio
            assert isinstance(grown, bytearray)
            grown.extend(audio)
            tail.num_frames = len(grown) // (2 * self.num_channels)
            return
        run = bytearray(audio)
        frame = cls(run, sample_rate=self.sample_rate, num_channels=self.num_channels)  # type: ignore[arg-type]
        frame.interruptible = interruptible
        self._open = frame
        self._append(frame)

    def put(self, frame: Frame) -> None:
        """Queue a frame to be handled after the audio queued before it."""
        self._open = None
        self._append(frame)

    def _append(self, frame: Frame) -> None:
        self._items.append(frame)
        self._ready.set()

    def get_nowait(self) -> Frame | None:
        """The next entry, or None when none waits; a run taken is never extended again."""
        items = self._items
        if not items:
            return None
        frame = items.popleft()
        if frame is self._open:
            self._open = None
        if not items:
            self._ready.clear()
        return frame

    async def get(self) -> Frame:
        """Wait for the next entry."""
        while True:
            frame = self.get_nowait()
            if frame is not None:
                return frame
            await self._ready.wait()

    def drop_interruptible(self) -> bool:
        """Drop every interruptible entry and pending audio (a barge-in).

        Returns:
            Whether any audio is left (uninterruptible runs or pending audio).
        """
        kept = [f for f in self._items if not f.interruptible]
        self._items = deque(kept)
        if self._open is not None and (not kept or kept[-1] is not self._open):
            self._open = None
        if self.pending and self._pending_interruptible:
            self.pending = bytearray()
        if not kept:
            self._ready.clear()
        return bool(self.pending) or any(isinstance(f, OutputAudioRawFrame) for f in kept)

    def has_audio(self) -> bool:
        """Whether audio waits (a queued run or pending audio)."""
        return bool(self.pending) or any(isinstance(f, OutputAudioRawFrame) for f in self._items)
