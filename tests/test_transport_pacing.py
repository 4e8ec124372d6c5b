"""Unit tests for the pacing clock and the low-latency resampler."""

import numpy as np
import pytest

from pipelines.audio.resampling import FirStreamResampler
from pipelines.twilio.pacing import Pacer

pytestmark = pytest.mark.unit

CHUNK = 0.04


def run_sender(pacer: Pacer, start: float, chunks: int, stall_at: int = -1, stall: float = 0.0):
    """Simulate a sender on a fake clock; return the send times."""
    now = start
    times = []
    for i in range(chunks):
        if i == stall_at:
            now += stall
        times.append(now)
        now += pacer.next_delay(now)
    return times


def test_steady_sending_is_real_time_with_bounded_lead() -> None:
    pacer = Pacer(CHUNK)
    times = run_sender(pacer, 100.0, 50)
    # The first two chunks go at once (one chunk of lead), then one per chunk duration.
    assert times[1] == pytest.approx(100.0)
    assert times[-1] - times[1] == pytest.approx(48 * CHUNK)
    for i, t in enumerate(times):
        # Never more than one chunk ahead of playout: chunk i starts playing at 100 + i*CHUNK.
        assert (100.0 + i * CHUNK) - t <= CHUNK + 1e-9


def test_pacing_catches_up_after_an_injected_stall() -> None:
    pacer = Pacer(CHUNK)
    times = run_sender(pacer, 0.0, 50, stall_at=10, stall=0.2)
    # The five chunks due during the stall leave at once...
    late = [t for t in times[10:] if t == pytest.approx(times[10])]
    assert len(late) >= 5
    # ...and the schedule is back on the original absolute deadlines (no drift).
    assert times[-1] == pytest.approx(48 * CHUNK)
    assert pacer.restarts == 1


def test_long_silence_restarts_the_clock() -> None:
    pacer = Pacer(CHUNK, idle_reset_secs=0.5)
    run_sender(pacer, 0.0, 10)
    times = run_sender(pacer, 5.0, 10)
    assert pacer.restarts == 2
    assert times[-1] - times[1] == pytest.approx(8 * CHUNK)


def test_reset_on_interruption_restarts_and_empties_buffer() -> None:
    pacer = Pacer(CHUNK)
    run_sender(pacer, 0.0, 10)
    assert pacer.buffered_secs(0.30) > 0
    pacer.reset(0.30)
    assert pacer.buffered_secs(0.30) == 0
    assert pacer.next_delay(0.31) == pytest.approx(0.0)
    assert pacer.restarts == 2


def test_lead_is_configurable() -> None:
    pacer = Pacer(CHUNK, max_lead_secs=0.0)
    assert pacer.next_delay(1.0) == pytest.approx(CHUNK)


@pytest.mark.parametrize(("in_rate", "out_rate"), [(8000, 16000), (24000, 8000), (16000, 24000)])
async def test_fir_resampler_streams_without_holding_audio(in_rate: int, out_rate: int) -> None:
    x = np.random.default_rng(1).integers(-8000, 8000, 4801).astype(np.int16)
    whole = await FirStreamResampler().resample(x.tobytes(), in_rate, out_rate)
    chunked = FirStreamResampler()
    parts, i = [], 0
    for n in (7, 160, 333, 1, 999, 3000, 301):
        parts.append(await chunked.resample(x[i : i + n].tobytes(), in_rate, out_rate))
        i += n
    assert b"".join(parts) == whole
    # Output keeps pace with input: nothing is held back beyond one output sample.
    assert abs(len(whole) // 2 - len(x) * out_rate / in_rate) <= 1


async def test_fir_resampler_flush_after_reset_returns_nothing() -> None:
    # An interrupted reply resets the resampler; the TTSStoppedFrame that follows flushes it.
    # That flush must not produce a chunk of digital silence for Twilio (a second `clear`).
    r = FirStreamResampler()
    x = np.random.default_rng(2).integers(-8000, 8000, 2400).astype(np.int16)
    await r.resample(x.tobytes(), 24000, 8000)
    assert len(await r.flush()) > 0  # audio was inside: its tail comes out
    assert await r.flush() == b""  # flushed: nothing left
    await r.resample(x.tobytes(), 24000, 8000)
    await r.reset()
    assert await r.flush() == b""  # reset: nothing left


@pytest.mark.parametrize(("in_rate", "out_rate"), [(24000, 8000), (8000, 16000)])
async def test_fir_resampler_passes_speech_band_and_rejects_aliases(
    in_rate: int, out_rate: int
) -> None:
    t = np.arange(2 * in_rate) / in_rate

    async def gain_db(freq: float, image: bool = False) -> float:
        x = (10000 * np.sin(2 * np.pi * freq * t)).astype(np.int16)
        out = await FirStreamResampler().resample(x.tobytes(), in_rate, out_rate)
        y = np.frombuffer(out, np.int16)[out_rate // 4 : -out_rate // 4].astype(float)
        if image:  # an upsampler's image of ``freq`` sits at in_rate - freq
            image = 2 * np.pi * (in_rate - freq) * np.arange(len(y)) / out_rate
            basis = np.stack((np.sin(image), np.cos(image)))
            y = basis.T @ np.linalg.lstsq(basis.T, y, rcond=None)[0]
        rms = np.sqrt(np.mean(y**2))
        return float(20 * np.log10(rms / (10000 / np.sqrt(2)) + 1e-12))

    if out_rate < in_rate:
        assert abs(await gain_db(1000)) < 0.1
        assert abs(await gain_db(3000)) < 0.1
        assert abs(await gain_db(3400)) < 0.2
        # 4.6 kHz would alias to 3.4 kHz, the top of the phone band; 5 kHz to 3 kHz.
        assert await gain_db(4600) < -40
        assert await gain_db(5000) < -65
        assert await gain_db(6000) < -65
    else:
        assert abs(await gain_db(1000)) < 0.1
        assert abs(await gain_db(3400)) < 0.2
        # The image of a 3.4 kHz tone lands at 4.6 kHz, of 3 kHz at 5 kHz, of 1 kHz at 7 kHz.
        assert await gain_db(3400, image=True) < -40
        assert await gain_db(3000, image=True) < -65
        assert await gain_db(1000, image=True) < -65
