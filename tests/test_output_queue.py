"""The output queue: one queued frame per run of bot audio, in order, interruptible."""

from __future__ import annotations

from typing import Any

import pytest
from pipecat.frames.frames import TTSAudioRawFrame, TTSStoppedFrame

from pipelines.twilio.output_queue import OutputQueue

pytestmark = pytest.mark.unit

CHUNK = 640  # 40 ms at 8 kHz


def make_queue() -> OutputQueue:
    return OutputQueue(8000, CHUNK)


def put(queue: OutputQueue, n: int, value: int, interruptible: bool = True) -> None:
    queue.put_audio(bytes([value]) * n, TTSAudioRawFrame, interruptible)


def queued(queue: OutputQueue) -> list[Any]:
    items = []
    while (item := queue.get_nowait()) is not None:
        items.append(item)
    return items


async def test_a_run_of_audio_is_one_frame_and_order_is_kept() -> None:
    queue = make_queue()
    for i in range(10):  # 10 x 62.5 ms: 15 whole chunks, 25 ms left waiting for a chunk
        put(queue, 1000, i + 1)
    stopped = TTSStoppedFrame()
    queue.put(stopped)
    put(queue, 1280, 99)
    items = queued(queue)
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
    queue = make_queue()
    put(queue, CHUNK, 1)
    taken = await queue.get()  # the writer took it
    put(queue, CHUNK, 2)
    assert len(taken.audio) == CHUNK
    (waiting,) = queued(queue)
    assert waiting is not taken and bytes(waiting.audio) == bytes([2]) * CHUNK


async def test_uninterruptible_audio_is_its_own_frame_and_survives_an_interruption() -> None:
    queue = make_queue()
    put(queue, 2 * CHUNK, 1)
    put(queue, 2 * CHUNK, 2, interruptible=False)
    put(queue, 2 * CHUNK, 3)
    put(queue, 100, 4)  # waiting for a chunk
    assert queue.drop_interruptible()  # what an interruption does
    assert not queue.pending
    (kept,) = queued(queue)
    assert not kept.interruptible and bytes(kept.audio) == bytes([2]) * 2 * CHUNK


async def test_the_end_of_a_reply_is_padded_to_a_chunk_and_goes_before_what_follows() -> None:
    queue = make_queue()
    put(queue, CHUNK + 100, 1)
    queue.end_run(bytes([7]) * 50)  # the resampler's tail
    stopped = TTSStoppedFrame()
    queue.put(stopped)
    run, sync = queued(queue)
    assert bytes(run.audio) == bytes([1]) * (CHUNK + 100) + bytes([7]) * 50 + bytes(CHUNK - 150)
    assert sync is stopped
    queue.end_run()  # nothing pending: nothing queued
    assert len(queue) == 0 and not queue.has_audio()


async def test_an_interruption_that_leaves_no_audio_says_so() -> None:
    queue = make_queue()
    put(queue, 3 * CHUNK, 1)
    queue.put(TTSStoppedFrame())
    assert queue.has_audio()
    assert not queue.drop_interruptible()
    assert len(queue) == 0 and queue.get_nowait() is None
    put(queue, CHUNK, 2)  # the next reply starts a new run
    (run,) = queued(queue)
    assert bytes(run.audio) == bytes([2]) * CHUNK
