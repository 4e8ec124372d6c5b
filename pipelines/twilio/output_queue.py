"""A compact audio queue for Pipecat's output ``MediaSender``: one frame per run of audio.

Pipecat cuts the bot's audio into one frame per output chunk (40 ms here) and queues them all.
Gemini sends audio faster than real time, so a reply waits in that queue for seconds: at 8 kHz
that is about 1.1 KB and two garbage-collected objects per 40 ms, per call. With 150 calls,
tens of thousands of such frames are alive at any moment; every collection of the young
generation walks them (measured: 12-17 ms per collection at 140 calls, 54 ms for the next
generation) and every caller hears the stall.

``install(sender, chunk_bytes)`` replaces two methods of one ``MediaSender``: whole chunks are
still taken from Pipecat's buffer exactly as before, but a chunk is appended to the frame at the
tail of the queue when that frame is ours, still waiting and of the same kind (same frame class,
same interruptible flag); otherwise a new frame starts. The queue then holds one frame per run
of audio between other queued frames (marks, ``TTSStoppedFrame``), in the same order, and the
output transport writes each frame as paced chunks (``AiohttpWebsocketOutputTransport``).
Interruptions keep working unchanged: ``FrameQueue.reset()`` drops interruptible frames whole.
"""

from __future__ import annotations

from typing import Any

from pipecat.frames.frames import OutputAudioRawFrame


class _Coalescer:
    """The replacement ``handle_audio_frame``/``_enqueue_audio_chunk`` of one sender."""

    def __init__(self, sender: Any) -> None:
        self._sender = sender
        self._open: OutputAudioRawFrame | None = None  # the last frame we queued
        self._open_audio = bytearray()  # its audio (the same object as its ``audio``)

    async def handle_audio_frame(self, frame: OutputAudioRawFrame) -> None:
        """Pipecat's ``MediaSender.handle_audio_frame``, enqueueing through ``enqueue``."""
        sender = self._sender
        if not sender._params.audio_out_enabled:
            return
        resampled = await sender._resampler.resample(
            frame.audio, frame.sample_rate, sender._sample_rate
        )
        sender._audio_buffer_cls = type(frame)
        sender._buffer_audio(resampled, uninterruptible=not frame.interruptible)
        while sender._buffered_audio_bytes >= sender._audio_chunk_size:
            audio, uninterruptible = sender._take_audio_chunk()
            await self.enqueue(audio, uninterruptible)

    async def enqueue(self, audio: bytes, uninterruptible: bool) -> None:
        """Append ``audio`` to the waiting tail frame, or queue a new frame for it."""
        sender = self._sender
        queue = sender._audio_queue
        tail = self._open
        if (
            tail is not None
            and queue._queue
            and queue._queue[-1] is tail
            and tail.interruptible == (not uninterruptible)
            and type(tail) is sender._audio_buffer_cls
        ):
            self._open_audio.extend(audio)
            tail.num_frames = len(self._open_audio) // (2 * tail.num_channels)
            return
        self._open_audio = bytearray(audio)
        frame = sender._audio_buffer_cls(
            self._open_audio,
            sample_rate=sender._sample_rate,
            num_channels=sender._params.audio_out_channels,
        )
        frame.transport_destination = sender._destination
        frame.interruptible = not uninterruptible
        self._open = frame
        await queue.put(frame)


def install(sender: Any) -> None:
    """Make ``sender`` (a ``BaseOutputTransport.MediaSender``) queue runs, not chunks."""
    coalescer = _Coalescer(sender)
    sender.handle_audio_frame = coalescer.handle_audio_frame
    sender._enqueue_audio_chunk = coalescer.enqueue
