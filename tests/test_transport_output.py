"""The output processor in a real Pipecat pipeline over a recording socket (no network).

What the rest of the call relies on: speaking frames both ways around the audio, frames after
the audio queued before them, ``clear`` and nothing stale after a barge-in, the end sequence.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EndFrame,
    Frame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from pipelines.twilio.serializer import TwilioSerializer
from pipelines.twilio.transport_client import AiohttpWebsocketParams, MarkBook, WebsocketClient
from pipelines.twilio.transport_output import AiohttpWebsocketOutputTransport

pytestmark = [pytest.mark.unit, pytest.mark.timed]  # real timers: runs with the calls

RATE = 24000


class RecordingSocket:
    """What the output writes, in order ("media", "clear", "mark:<name>")."""

    def __init__(self) -> None:
        self.closed = False
        self.sent: list[str] = []

    async def send_str(self, data: str) -> None:
        message = json.loads(data)
        event = message["event"]
        self.sent.append(f"mark:{message['mark']['name']}" if event == "mark" else event)

    async def close(self, **_: Any) -> None:
        self.closed = True


class Owner:
    """The transport as the output sees it; echoes nothing (marks time out)."""

    def __init__(self) -> None:
        self.marks = MarkBook()

    async def cleanup(self) -> None:
        pass

    async def notify(self, event_name: str, *args: Any) -> None:
        pass

    async def mark_echoed(self, name: str) -> None:
        pass


class Recorder(FrameProcessor):
    """Passes everything on; notes each frame with how many messages had been sent.

    Direct mode: a frame is noted in the task that pushed it, before that push returns.
    """

    def __init__(self, name: str, ws: RecordingSocket) -> None:
        super().__init__(name=name, enable_direct_mode=True)
        self.ws = ws
        self.seen: list[tuple[Frame, FrameDirection, int]] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        self.seen.append((frame, direction, len(self.ws.sent)))
        await self.push_frame(frame, direction)

    def of(self, cls: type[Frame]) -> list[tuple[Frame, FrameDirection, int]]:
        return [s for s in self.seen if isinstance(s[0], cls)]


def tone(secs: float) -> bytes:
    t = np.arange(int(secs * RATE)) / RATE
    return (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16).tobytes()


@pytest.fixture
async def rig() -> AsyncIterator[Any]:
    ws = RecordingSocket()
    params = AiohttpWebsocketParams(
        audio_out_enabled=True,
        serializer=TwilioSerializer("MZ" + "0" * 32),
        audio_out_end_silence_secs=0,
        end_mark_timeout_secs=0.2,
        max_lead_secs=0.4,
    )
    output = AiohttpWebsocketOutputTransport(
        Owner(),
        WebsocketClient(ws, 0.1),  # type: ignore[arg-type]
        params,
        enable_direct_mode=True,
    )
    before, after = Recorder("before", ws), Recorder("after", ws)
    worker = PipelineWorker(
        Pipeline([before, output, after]),
        params=PipelineParams(audio_out_sample_rate=8000),
        enable_rtvi=False,
        idle_timeout_secs=None,
        enable_turn_tracking=False,
    )
    runner = WorkerRunner(handle_sigint=False, handle_sigterm=False)
    await runner.add_workers(worker)
    run = asyncio.create_task(runner.run(), name="test-output-runner")
    for _ in range(200):
        if output.sample_rate:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    yield ws, output, before, after, worker
    if not run.done():
        await worker.cancel()
    await asyncio.wait_for(run, 5)


async def speak(source: FrameProcessor, secs: float, part_secs: float = 0.08) -> None:
    await source.push_frame(TTSStartedFrame())
    pcm, step = tone(secs), int(part_secs * RATE) * 2
    for i in range(0, len(pcm), step):
        await source.push_frame(TTSAudioRawFrame(pcm[i : i + step], RATE, 1))
    await source.push_frame(TTSStoppedFrame())


async def wait_for(cond: Any, secs: float = 5.0) -> None:
    async with asyncio.timeout(secs):
        while not cond():  # noqa: ASYNC110  (polls what the pipeline's tasks record)
            await asyncio.sleep(0.01)


async def test_speaking_frames_go_both_ways_around_the_reply(rig: Any) -> None:
    ws, _output, before, after, _worker = rig
    await speak(before, 0.4)
    await wait_for(lambda: after.of(TTSStoppedFrame))
    media = ws.sent.count("media")
    assert media == 11  # 400 ms in 40 ms chunks, and the filter's tail padded to a chunk
    assert ws.sent[-1] == "mark:reply-1"  # after the reply's audio
    # Started before the first chunk and stopped after the last, upstream and downstream.
    for recorder, direction in (
        (after, FrameDirection.DOWNSTREAM),
        (before, FrameDirection.UPSTREAM),
    ):
        ((_, d1, sent_at_start),) = recorder.of(BotStartedSpeakingFrame)
        ((_, d2, sent_at_stop),) = recorder.of(BotStoppedSpeakingFrame)
        assert d1 == d2 == direction
        assert sent_at_start == 0 and sent_at_stop == media
    # The reply's TTSStoppedFrame went on only once its audio had been sent.
    ((_, _, sent_at_tts_stopped),) = after.of(TTSStoppedFrame)
    assert sent_at_tts_stopped == media
    assert not after.of(TTSAudioRawFrame)  # sent audio is not pushed on


async def test_barge_in_clears_at_once_and_nothing_stale_follows(rig: Any) -> None:
    ws, output, before, after, _worker = rig
    await speak(before, 3.0)  # arrives at once; leaves at real time
    await wait_for(lambda: ws.sent.count("media") >= 15)
    await before.broadcast_interruption()
    await asyncio.sleep(0.3)
    assert ws.sent.count("clear") == 1
    assert "media" not in ws.sent[ws.sent.index("clear") :]
    assert ws.sent.count("media") < 30
    assert output.clears_sent == 1
    assert len(after.of(BotStoppedSpeakingFrame)) == 1
    assert len(before.of(BotStoppedSpeakingFrame)) == 1
    assert not after.of(TTSStoppedFrame)  # the interrupted reply's end was dropped with it
    # The next reply plays from the start, with its own speaking frames.
    sent = len(ws.sent)
    await speak(before, 0.2)
    await wait_for(lambda: "mark:reply-2" in ws.sent)
    assert ws.sent[sent:].count("media") == 6
    assert len(after.of(BotStartedSpeakingFrame)) == 2


async def test_end_frame_drains_then_sends_the_end_mark_and_closes(rig: Any) -> None:
    ws, _output, before, _after, worker = rig
    await speak(before, 0.2)
    await worker.queue_frame(EndFrame())
    await wait_for(lambda: ws.closed)
    assert ws.sent == ["media"] * 6 + ["mark:reply-1", "mark:call-end"]
