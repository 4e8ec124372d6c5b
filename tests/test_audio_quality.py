"""Round-trip speech quality of the call path's resampling (sim.bench.audio_quality)."""

from __future__ import annotations

import pytest

from pipelines.audio.resampling import FirStreamResampler
from sim.bench import audio_quality as q

pytestmark = pytest.mark.unit


async def test_fir_round_trip_keeps_speech_close_to_the_best_resampler() -> None:
    x8 = q.load_8k(q.ASSETS / "caller_question.wav")
    ours_full, ours_band, lag = q.snr_db(x8, await q.round_trip(x8, FirStreamResampler))
    best_full, best_band, _ = q.snr_db(x8, await q.round_trip(x8, q._SoxrBatch))
    assert lag == 24  # 1.5 ms of filter delay each way, at 8 kHz
    assert ours_band > 37.0 and ours_band > best_band - 4.0, (ours_band, best_band)
    assert ours_full > best_full - 4.0, (ours_full, best_full)


async def test_fir_holds_nothing_back_where_soxr_stream_holds_tens_of_ms() -> None:
    x8 = q.load_8k(q.ASSETS / "caller_question.wav")
    q.HELD_MS.clear()
    await q.stream(FirStreamResampler(), x8, 8000, 16000)
    assert max(q.HELD_MS) < 1.0
    q.HELD_MS.clear()
    await q.stream(q._SoxrVhq(), x8, 8000, 16000)
    assert max(q.HELD_MS) > 40.0
