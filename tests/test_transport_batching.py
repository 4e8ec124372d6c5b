"""Input batching and the bridge-latency bookkeeping of the transport (no sockets)."""

from __future__ import annotations

import numpy as np
import pytest
from pipecat.frames.frames import InputAudioRawFrame

from bot.stats import Histogram
from pipelines.audio.resampling import FirStreamResampler
from pipelines.frame_metadata import RX_EACH_KEY, RX_KEY
from pipelines.twilio.transport_client import (
    AiohttpWebsocketParams,
    MarkBook,
    OutboundLatency,
)
from pipelines.twilio.transport_input import AiohttpWebsocketInputTransport

pytestmark = pytest.mark.unit

RATE = 16000
FRAME_20MS = RATE * 2 // 50


class _Collect(AiohttpWebsocketInputTransport):
    def __init__(self, batch_ms: int) -> None:
        params = AiohttpWebsocketParams(audio_in_enabled=True, input_batch_ms=batch_ms)
        super().__init__(None, None, params)  # type: ignore[arg-type]
        self.pushed: list[InputAudioRawFrame] = []

    async def push_audio_frame(self, frame: InputAudioRawFrame) -> None:
        self.pushed.append(frame)


def _frame(i: int) -> InputAudioRawFrame:
    return InputAudioRawFrame(audio=bytes([i % 256]) * FRAME_20MS, sample_rate=RATE, num_channels=1)


async def test_two_twilio_frames_make_one_40ms_frame_in_order() -> None:
    t = _Collect(40)
    for i in range(6):
        await t._push_audio(_frame(i), rx_at=100.0 + 0.02 * i)
    assert len(t.pushed) == 3
    for k, f in enumerate(t.pushed):
        assert f.audio == bytes([2 * k]) * FRAME_20MS + bytes([2 * k + 1]) * FRAME_20MS
        assert f.sample_rate == RATE and f.num_frames == 640
        # Stamped with the arrival of its first (oldest) half: the batching wait is counted.
        assert f.metadata[RX_KEY] == pytest.approx(100.0 + 0.04 * k)
        # And with each message's arrival, for one bridge-latency sample per Twilio message.
        assert f.metadata[RX_EACH_KEY] == pytest.approx((100.0 + 0.04 * k, 100.02 + 0.04 * k))


async def test_partial_batch_is_flushed_before_other_frames() -> None:
    t = _Collect(40)
    await t._push_audio(_frame(1), rx_at=5.0)
    assert t.pushed == []
    await t._flush_audio()
    assert len(t.pushed) == 1 and t.pushed[0].audio == bytes([1]) * FRAME_20MS
    assert t.pushed[0].metadata[RX_KEY] == 5.0
    await t._flush_audio()
    assert len(t.pushed) == 1


async def test_batch_of_20ms_passes_frames_through() -> None:
    t = _Collect(20)
    f = _frame(3)
    await t._push_audio(f, rx_at=1.0)
    assert t.pushed == [f] and f.metadata[RX_KEY] == 1.0


def test_outbound_latency_counts_processing_not_pacing() -> None:
    hist = Histogram()
    lat = OutboundLatency(hist)
    # Two 80 ms model messages arrive at t=0 (ahead of real time).
    lat.audio_in(0.08, rx_at=0.0)
    lat.audio_in(0.08, rx_at=0.0)
    # Chunk 1 leaves 2 ms after arrival: 2 ms.
    lat.audio_out(0.04, now=0.002)
    lat.release_at = 0.002  # no pacing wait yet (lead)
    lat.audio_out(0.04, now=0.003)
    lat.release_at = 0.040
    # Chunk 3 carries the start of message 2; the pacer released it at 40 ms, sent at 41 ms.
    lat.audio_out(0.04, now=0.041)
    assert hist.n == 2
    assert hist.max_ms == pytest.approx(2.0, abs=0.01)  # message 1: 2 ms after arrival
    assert hist.percentile(50) == pytest.approx(1.0, abs=0.25)  # message 2: 1 ms after release


def test_outbound_latency_forgets_interrupted_audio() -> None:
    hist = Histogram()
    lat = OutboundLatency(hist)
    lat.audio_in(0.08, rx_at=0.0)
    lat.audio_out(0.04, now=0.001)
    lat.audio_in(0.5, rx_at=0.01)
    lat.interrupted()
    lat.audio_in(0.08, rx_at=1.0)
    lat.audio_out(0.04, now=1.005)
    assert hist.n == 2
    assert hist.max_ms == pytest.approx(5.0, abs=0.01)


def test_histogram_percentiles() -> None:
    h = Histogram()
    assert h.percentile(50) is None
    for ms in range(1, 101):
        h.add_secs(ms / 1000)
    assert h.percentile(50) == pytest.approx(50.0, abs=0.25)
    assert h.percentile(99) == pytest.approx(99.0, abs=0.25)
    h.add_secs(5.0)  # beyond the last bucket
    assert h.summary()["max"] == pytest.approx(5000.0)


async def test_mark_book() -> None:
    book = MarkBook()
    waiter = book.expect("a")
    book.sent("a", 1.5)
    book.sent("b", 2.0)
    book.cleared()
    book.sent("c", 3.0)
    assert book.echoed("a") is False and waiter.result() is False
    assert book.echoed("c") is True
    assert book.played_audio_secs == 3.0
    assert book.echoed("zzz") is None


async def test_8khz_batches_are_resampled_once_to_the_pipeline_rate() -> None:
    t = _Collect(40)
    t._sample_rate = RATE  # as set by the StartFrame
    rng = np.random.default_rng(2)
    halves = [rng.integers(-8000, 8000, 160, dtype=np.int16).tobytes() for _ in range(4)]
    for i, pcm in enumerate(halves):
        frame = InputAudioRawFrame(audio=pcm, sample_rate=8000, num_channels=1)
        await t._push_audio(frame, rx_at=10.0 + 0.02 * i)
    # The same bytes as one resampler fed the whole 8 kHz stream, in 40 ms frames at 16 kHz.
    whole = await FirStreamResampler().resample(b"".join(halves), 8000, RATE)
    assert [f.sample_rate for f in t.pushed] == [RATE, RATE]
    assert b"".join(f.audio for f in t.pushed) == whole
    assert [f.metadata[RX_KEY] for f in t.pushed] == pytest.approx([10.0, 10.04])


class _Route:
    def __init__(self) -> None:
        self.frames: list[InputAudioRawFrame] = []

    async def start(self, push) -> None:  # type: ignore[no-untyped-def]
        return None

    async def stop(self) -> None:
        return None

    async def __call__(self, frame: InputAudioRawFrame) -> None:
        self.frames.append(frame)


async def test_with_a_caller_route_batches_stay_at_twilios_rate() -> None:
    """Local VAD runs on the caller's 8 kHz: the route gets the batches unresampled."""
    params = AiohttpWebsocketParams(audio_in_enabled=True, input_batch_ms=40)
    t = AiohttpWebsocketInputTransport(None, None, params)  # type: ignore[arg-type]
    route = _Route()
    t.caller_route = route
    t._sample_rate = RATE  # as set by the StartFrame
    rng = np.random.default_rng(5)
    halves = [rng.integers(-8000, 8000, 160, dtype=np.int16).tobytes() for _ in range(4)]
    for i, pcm in enumerate(halves):
        frame = InputAudioRawFrame(audio=pcm, sample_rate=8000, num_channels=1)
        await t._push_audio(frame, rx_at=20.0 + 0.02 * i)
    assert [f.sample_rate for f in route.frames] == [8000, 8000]
    assert b"".join(f.audio for f in route.frames) == b"".join(halves)
    assert [f.metadata[RX_KEY] for f in route.frames] == pytest.approx([20.0, 20.04])
