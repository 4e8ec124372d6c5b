"""No per-call state grows with call length (a long call simulated through the audio path)."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest
from pipecat.audio.vad.vad_analyzer import VADParams

from bot.stats import Histogram
from pipelines.audio.batched_vad import BatchedSileroVAD
from pipelines.audio.resampling import FirStreamResampler
from pipelines.twilio.serializer import TwilioSerializer
from pipelines.twilio.transport_client import OutboundLatency

pytestmark = pytest.mark.unit

MINUTES = 4


async def _one_minute(state: dict, rng: np.random.Generator, minute: int) -> None:
    vad, rin, rout, ser, lat = state["vad"], state["in"], state["out"], state["ser"], state["lat"]
    detector = state["detector"]
    t = minute * 60.0
    for second in range(60):
        talking = second % 10 == 0  # the caller talks one second in ten
        level = 3000.0 if talking else 2.0
        for _ in range(25):  # 40 ms caller frames (two Twilio frames batched)
            pcm8 = (rng.normal(0, level, 320)).astype(np.int16).tobytes()
            await rin.resample(pcm8, 8000, 16000)
            vad.feed(pcm8)
            await detector.run_pending()
        for k in range(12):  # ~80 ms model messages, sent out as 40 ms Twilio frames
            now = t + second + k * 0.08
            model = (rng.normal(0, 2000, 1920)).astype(np.int16).tobytes()
            lat.audio_in(0.08, rx_at=now)
            pcm = await rout.resample(model, 24000, 8000)
            for half in (pcm[:320], pcm[320:]):
                ser.media_message(half)
                lat.audio_out(len(half) / 16000, now + 0.001)


async def test_no_growth_over_a_long_call() -> None:
    detector = BatchedSileroVAD(tick_secs=3600.0)  # stepped by hand
    vad = detector.open(VADParams(), lambda _speaking: None)
    state = {
        "detector": detector,
        "vad": vad,
        "in": FirStreamResampler(),
        "out": FirStreamResampler(),
        "ser": TwilioSerializer("MZ" + "0" * 32),
        "lat": OutboundLatency(Histogram()),
    }
    rng = np.random.default_rng(3)
    await _one_minute(state, rng, 0)  # warm up: buffers reach their steady size
    gc.collect()
    tracemalloc.start()
    try:
        await _one_minute(state, rng, 1)
        gc.collect()
        after_one, _ = tracemalloc.get_traced_memory()
        for minute in range(2, MINUTES):
            await _one_minute(state, rng, minute)
        gc.collect()
        after_all, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    growth = after_all - after_one
    # A buffer that kept even 1 % of the audio would grow by ~20 KB a minute.
    assert growth < 8 * 1024, f"per-call state grew {growth} bytes over {MINUTES - 2} minutes"
    vad.close()
    await detector.stop()
    assert detector.windows >= MINUTES * 60 * 31  # every 32 ms window of the call was scored
