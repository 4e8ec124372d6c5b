"""No per-call state grows with call length (a long call simulated through the audio path).

Counted: what the process allocates and keeps over the call's later minutes (``tracemalloc``),
less what the xdist worker's I/O thread queues meanwhile (execnet unpickling the controller's
commands into its channel's ``queue.Queue``, which the worker reads only between tests): a
6-worker run once failed on 24.6 KB that alone measured 160 bytes. The audio path uses neither
module. On failure the message lists the lines that grew.
"""

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
# The worker's command channel, filled by its I/O thread while a test runs (see above), the
# locks and waiters of the queue it fills (threading: the audio path here starts no thread),
# the first snapshot itself, and onnxruntime's Python wrapper around the one Silero session
# the process shares (not per-call state: a 10-worker run once counted +14.2 KB at its
# `_sess.run` line, while the rest grew 0.6 KB; in ~40 other runs it stayed under the bound).
NOT_THE_CALL = [
    tracemalloc.Filter(False, pattern)
    for pattern in (
        "*/execnet/*",
        "*/xdist/*",
        "*/queue.py",
        "*/threading.py",
        "*/tracemalloc.py",
        "*/onnxruntime/*",
    )
]


def _kept(snapshot: tracemalloc.Snapshot) -> tracemalloc.Snapshot:
    """The snapshot less the worker's command channel and the measurement's own objects."""
    return snapshot.filter_traces(NOT_THE_CALL)


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
        after_one = tracemalloc.take_snapshot()
        for minute in range(2, MINUTES):
            await _one_minute(state, rng, minute)
        gc.collect()
        after_all = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    diff = _kept(after_all).compare_to(_kept(after_one), "lineno")  # filtered untraced
    growth = sum(d.size_diff for d in diff)
    grew = [f"{d.size_diff:+} B {d.traceback}" for d in diff if d.size_diff > 0][:5]
    # A buffer that kept even 1 % of the audio would grow by ~20 KB a minute.
    assert growth < 8 * 1024, (
        f"per-call state grew {growth} bytes over {MINUTES - 2} minutes: {grew}"
    )
    vad.close()
    await detector.stop()
    assert detector.windows >= MINUTES * 60 * 31  # every 32 ms window of the call was scored
