"""Loopback tests: real aiohttp server + client WebSocket, a tiny Pipecat pipeline, a fake bot."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from aiohttp import WSMsgType, web
from pipecat.frames.frames import (
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from pipelines.twilio.serializer import TwilioSerializer
from pipelines.twilio.transport import AiohttpWebsocketParams, AiohttpWebsocketTransport

pytestmark = pytest.mark.e2e

SID = "MZloop"
GEMINI_RATE_HZ = 24000
WRITE_TIMEOUT_SECS = 1.0  # a chunk's write takes at most ~80 ms (send, then the pacing sleep)


class FakeBot(FrameProcessor):
    """Records caller frames; speaks 24 kHz audio in faster-than-real-time bursts like Gemini."""

    def __init__(self) -> None:
        super().__init__(name="fake-bot")
        self.dtmf: list[str] = []
        self.audio_frames = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputDTMFFrame):
            self.dtmf.append(frame.button.value)
        elif isinstance(frame, InputAudioRawFrame):
            self.audio_frames += 1
        await self.push_frame(frame, direction)

    async def speak(self, secs: float, burst_secs: float = 0.2, gap_secs: float = 0.02) -> None:
        await self.push_frame(TTSStartedFrame())
        t = np.arange(int(secs * GEMINI_RATE_HZ)) / GEMINI_RATE_HZ
        pcm = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16).tobytes()
        step = int(burst_secs * GEMINI_RATE_HZ) * 2
        for i in range(0, len(pcm), step):
            await self.push_frame(TTSAudioRawFrame(pcm[i : i + step], GEMINI_RATE_HZ, 1))
            await asyncio.sleep(gap_secs)
        await self.push_frame(TTSStoppedFrame())


@dataclass
class Call:
    """One server-side call, for the test to poke at."""

    transport: AiohttpWebsocketTransport
    serializer: TwilioSerializer
    bot: FakeBot
    worker: PipelineWorker
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    marks: list[tuple[str, bool]] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)


CALLS: web.AppKey[asyncio.Queue[Call]] = web.AppKey("calls", asyncio.Queue)


async def media_stream(request: web.Request) -> web.WebSocketResponse:
    """The lead's handler in miniature: read connected/start, then run one pipeline."""
    ws = web.WebSocketResponse(max_msg_size=65536)
    await ws.prepare(request)
    await ws.receive_json()
    start = (await ws.receive_json())["start"]
    serializer = TwilioSerializer(start["streamSid"], start["callSid"])
    transport = AiohttpWebsocketTransport(
        ws,
        AiohttpWebsocketParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            serializer=serializer,
            audio_out_end_silence_secs=0,
            end_mark_timeout_secs=1.0,
            audio_out_write_timeout_secs=WRITE_TIMEOUT_SECS,
        ),
    )
    bot = FakeBot()
    worker = PipelineWorker(
        Pipeline([transport.input(), bot, transport.output()]),
        params=PipelineParams(audio_in_sample_rate=16000, audio_out_sample_rate=8000),
        enable_rtvi=False,
        idle_timeout_secs=None,
    )
    call = Call(transport, serializer, bot, worker)

    @transport.event_handler("on_client_connected")
    async def _connected(_t: Any, _ws: Any) -> None:
        call.connected.set()

    @transport.event_handler("on_client_disconnected")
    async def _disconnected(_t: Any, _ws: Any) -> None:
        call.disconnected.set()
        await worker.cancel()

    @transport.event_handler("on_mark")
    async def _mark(_t: Any, name: str, played: bool) -> None:
        call.marks.append((name, played))

    await request.app[CALLS].put(call)
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    try:
        await runner.run()
    finally:
        call.done.set()
    return ws


class Caller:
    """A fake Twilio: sends connected/start, records what the server sends, echoes marks."""

    def __init__(self, ws: Any, echo_marks: bool = True) -> None:
        self.ws = ws
        self.echo_marks = echo_marks
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.closed = asyncio.Event()
        self._task = asyncio.create_task(self._read(), name="test-caller-read")

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            self.received.append((time.monotonic(), data))
            if data["event"] == "mark" and self.echo_marks:
                await self.ws.send_json(data)
        self.closed.set()

    def events(self, name: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, m) for t, m in self.received if m["event"] == name]

    async def send(self, event: str, **body: Any) -> None:
        await self.ws.send_json({"event": event, "streamSid": SID, **body})

    async def stop(self) -> None:
        await self.ws.close()
        await self._task


@pytest.fixture
async def server(aiohttp_client: Any) -> Any:
    app = web.Application()
    app[CALLS] = asyncio.Queue()
    app.router.add_get("/ws", media_stream)
    return await aiohttp_client(app)


@pytest.fixture
async def dial(server: Any) -> AsyncIterator[Any]:
    opened: list[tuple[Caller, Call]] = []

    async def _dial(n: int = 1) -> tuple[Caller, Call]:
        ws = await server.ws_connect("/ws")
        await ws.send_json({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        start = {"streamSid": SID, "callSid": f"CA{n}", "accountSid": "AC1", "tracks": ["inbound"]}
        await ws.send_json({"event": "start", "streamSid": SID, "start": start})
        caller = Caller(ws)
        call = await asyncio.wait_for(server.app[CALLS].get(), 5)
        await asyncio.wait_for(call.connected.wait(), 5)
        opened.append((caller, call))
        return caller, call

    yield _dial
    for caller, call in opened:
        await caller.stop()
        await asyncio.wait_for(call.done.wait(), 5)


def media_bytes(caller: Caller) -> int:
    return sum(len(base64.b64decode(m["media"]["payload"])) for _, m in caller.events("media"))


async def wait_until(cond: Any, within_secs: float = 5.0) -> None:
    deadline = time.monotonic() + within_secs
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_one_second_of_audio_leaves_at_real_time_pace(dial: Any) -> None:
    caller, call = await dial()
    t0 = time.monotonic()
    await call.bot.speak(1.0)
    await wait_until(lambda: caller.events("mark"))
    media = caller.events("media")
    # 1 s of 8 kHz mu-law in 40 ms chunks, plus the resampler's 2 ms tail padded to one chunk.
    assert media_bytes(caller) == 8000 + 320
    assert len(media) == 26
    span = media[-1][0] - media[0][0]
    assert 0.9 < span < 1.15, span  # real time, minus the one-chunk lead
    assert media[0][0] - t0 < 0.3  # first audio quickly
    # The reply mark goes after the last media, and its echo fires on_mark(played=True).
    assert caller.events("mark")[0][1]["mark"]["name"] == "reply-1"
    assert caller.events("mark")[0][0] >= media[-1][0]
    await wait_until(lambda: call.marks)
    assert call.marks == [("reply-1", True)]
    assert call.transport.played_audio_secs == pytest.approx(1.04)


async def test_dtmf_arrives_as_input_dtmf_frame(dial: Any) -> None:
    caller, call = await dial()
    payload = base64.b64encode(b"\xff" * 160).decode()
    await caller.send("media", media={"payload": payload})
    await caller.send("dtmf", dtmf={"track": "inbound_track", "digit": "7"})
    await wait_until(lambda: call.bot.dtmf == ["7"])
    await wait_until(lambda: call.bot.audio_frames >= 1)


async def test_interruption_sends_clear_and_no_media_after_it(dial: Any) -> None:
    caller, call = await dial()
    speaking = asyncio.create_task(call.bot.speak(2.0, burst_secs=0.1), name="test-speak")
    await wait_until(lambda: len(caller.events("media")) >= 10)
    # Like Gemini: the interrupted reply stops being generated, and the interruption goes out.
    speaking.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await speaking
    await call.bot.broadcast_interruption()
    await asyncio.sleep(0.5)
    clears = caller.events("clear")
    assert len(clears) == 1
    clear_at = clears[0][0]
    seq = [m["event"] for _, m in caller.received]
    assert not [t for t, _ in caller.events("media") if t > clear_at], " ".join(e[:2] for e in seq)
    assert media_bytes(caller) < 2 * 8000
    # The next reply plays normally.
    before = len(caller.events("media"))
    await call.bot.speak(0.4)
    await wait_until(lambda: len(caller.events("media")) >= before + 10)


async def test_a_write_that_never_returns_ends_the_call(dial: Any) -> None:
    caller, call = await dial()
    output = call.transport.output()
    stuck = asyncio.Event()

    async def never_returns(_frame: Any) -> bool:
        stuck.set()
        await asyncio.Event().wait()
        return True

    output.write_audio_frame = never_returns  # type: ignore[method-assign]
    speaking = asyncio.create_task(call.bot.speak(1.0), name="test-speak-stuck")
    await asyncio.wait_for(stuck.wait(), 5)
    t0 = time.monotonic()
    # The watchdog cancels the write and reports a fatal error: the output is unusable, the
    # rest of the reply is dropped, and the pipeline can end (it no longer waits on the write).
    await wait_until(lambda: not output.is_usable, WRITE_TIMEOUT_SECS * 2)
    assert time.monotonic() - t0 < WRITE_TIMEOUT_SECS * 1.25 + 0.5
    await asyncio.wait_for(speaking, 5)
    await call.worker.queue_frame(EndFrame())
    await asyncio.wait_for(call.done.wait(), 5)


async def test_peer_closing_fires_on_client_disconnected(dial: Any) -> None:
    caller, call = await dial()
    await caller.ws.close()
    await asyncio.wait_for(call.disconnected.wait(), 5)
    await asyncio.wait_for(call.done.wait(), 5)


async def test_twilio_stop_ends_the_call(dial: Any) -> None:
    caller, call = await dial()
    await caller.send("stop", stop={"accountSid": "AC1", "callSid": "CA1"})
    await asyncio.wait_for(call.disconnected.wait(), 5)
    await asyncio.wait_for(call.done.wait(), 5)
    await asyncio.wait_for(caller.closed.wait(), 5)


async def test_end_frame_waits_for_the_end_mark_then_closes(dial: Any) -> None:
    caller, call = await dial()
    await call.bot.speak(0.3)
    await call.worker.queue_frame(EndFrame())
    await asyncio.wait_for(call.done.wait(), 5)
    await asyncio.wait_for(caller.closed.wait(), 5)
    names = [m["mark"]["name"] for _, m in caller.events("mark")]
    assert names == ["reply-1", "call-end"]
    assert ("call-end", True) in call.marks
    assert not call.disconnected.is_set()  # we closed it: not reported as a caller hang-up


async def test_oversized_message_closes_cleanly_with_1009(dial: Any) -> None:
    caller, call = await dial()
    await caller.ws.send_str("x" * 70000)
    await asyncio.wait_for(call.disconnected.wait(), 5)
    await asyncio.wait_for(caller.closed.wait(), 5)
    assert caller.ws.close_code == 1009
    assert call.serializer.bad_input == {"too_large": 1}


async def test_bad_input_on_one_call_does_not_disturb_another(dial: Any) -> None:
    bad_caller, bad_call = await dial(1)
    good_caller, good_call = await dial(2)
    speaking = asyncio.create_task(good_call.bot.speak(1.0), name="test-speak-good")
    garbage: list[Any] = [
        "not json",
        b"\x00binary",
        json.dumps({"event": "weird", "streamSid": SID}),
        json.dumps({"event": "media", "streamSid": "MZwrong", "media": {"payload": "/w=="}}),
        json.dumps({"event": "media", "streamSid": SID, "media": {"payload": "@@@"}}),
        json.dumps({"event": "media", "streamSid": SID}),
    ]
    for _ in range(50):
        for item in garbage:
            if isinstance(item, bytes):
                await bad_caller.ws.send_bytes(item)
            else:
                await bad_caller.ws.send_str(item)
        await asyncio.sleep(0.01)
    await bad_caller.send("dtmf", dtmf={"digit": "3"})
    await speaking
    await wait_until(lambda: good_caller.events("mark"))
    await wait_until(lambda: bad_call.bot.dtmf == ["3"])
    assert bad_call.serializer.bad_input == {
        "invalid_json": 50,
        "binary": 50,
        "unknown_event": 50,
        "wrong_stream_sid": 50,
        "invalid_payload": 50,
        "missing_fields": 50,
    }
    assert not bad_call.disconnected.is_set()
    times = [t for t, _ in good_caller.events("media")]
    assert media_bytes(good_caller) == 8000 + 320
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert max(gaps) < 0.1, max(gaps)  # 40 ms chunks, no gap while the other call gets garbage
    assert math.isclose(times[-1] - times[0], 1.0, abs_tol=0.15)
