"""The compact output queue: one queued frame per run of bot audio, in order, interruptible."""

from __future__ import annotations

from typing import Any

import pytest
from pipecat.frames.frames import TTSAudioRawFrame, TTSStoppedFrame
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import TransportParams
from pipecat.utils.frame_queue import FrameQueue

from pipelines.audio.resampling import FirStreamResampler
from pipelines.twilio import output_queue

pytestmark = pytest.mark.unit

CHUNK = 640  # 40 ms at 8 kHz


def make_sender() -> BaseOutputTransport.MediaSender:
    sender = BaseOutputTransport.MediaSender(
        None,  # type: ignore[arg-type]  # the transport is not used by the queueing path
        destination=None,
        sample_rate=8000,
        audio_chunk_size=CHUNK,
        params=TransportParams(audio_out_enabled=True),
    )
    sender._audio_queue = FrameQueue()
    sender._resampler = FirStreamResampler()
    output_queue.install(sender)
    return sender


def audio(n: int, value: int) -> TTSAudioRawFrame:
    return TTSAudioRawFrame(bytes([value]) * n, 8000, 1)


def queued(sender: BaseOutputTransport.MediaSender) -> list[Any]:
    return list(sender._audio_queue._queue)  # type: ignore[attr-defined]


async def test_a_run_of_audio_is_one_frame_and_order_is_kept() -> None:
    sender = make_sender()
    for i in range(10):  # 10 x 62.5 ms: 15 whole chunks, 25 ms left in Pipecat's buffer
        await sender.handle_audio_frame(audio(1000, i + 1))
    stopped = TTSStoppedFrame()
    await sender.handle_sync_frame(stopped)
    await sender.handle_audio_frame(audio(1280, 99))
    items = queued(sender)
    assert len(items) == 3
    first, sync, second = items
    assert sync is stopped
    assert isinstance(first, TTSAudioRawFrame) and isinstance(second, TTSAudioRawFrame)
    assert len(first.audio) == 15 * CHUNK and first.num_frames == 15 * CHUNK // 2
    expected = b"".join(bytes([i + 1]) * 1000 for i in range(10))
    assert bytes(first.audio) == expected[: 15 * CHUNK]
    # The 25 ms held back goes first in the next run, as Pipecat's chunking does.
    assert bytes(second.audio) == expected[15 * CHUNK :] + bytes([99]) * (2 * CHUNK - 400)


async def test_a_frame_being_written_is_never_extended() -> None:
    sender = make_sender()
    await sender.handle_audio_frame(audio(CHUNK, 1))
    taken = sender._audio_queue.get_nowait()  # the audio task took it
    await sender.handle_audio_frame(audio(CHUNK, 2))
    assert len(taken.audio) == CHUNK
    (waiting,) = queued(sender)
    assert waiting is not taken and bytes(waiting.audio) == bytes([2]) * CHUNK


async def test_uninterruptible_audio_is_its_own_frame_and_survives_an_interruption() -> None:
    sender = make_sender()
    await sender.handle_audio_frame(audio(2 * CHUNK, 1))
    keep = audio(2 * CHUNK, 2)
    keep.interruptible = False
    await sender.handle_audio_frame(keep)
    await sender.handle_audio_frame(audio(2 * CHUNK, 3))
    assert [len(f.audio) for f in queued(sender)] == [2 * CHUNK] * 3
    sender._audio_queue.reset()  # what an interruption does
    (kept,) = queued(sender)
    assert not kept.interruptible and bytes(kept.audio) == bytes([2]) * 2 * CHUNK
