"""Round-trip audio quality of the call path's resampling: ``python -m sim.bench.audio_quality``.

A caller's speech takes this path through the server and the model and back, when the model
echoes it (the emulator's ``echo`` voice does exactly that):

    8 kHz mu-law (Twilio) -> PCM -> 8k->16k (server) -> 16k->24k (model side, soxr HQ)
    -> 24k->8k (server) -> mu-law (Twilio)

This replays that chain offline on the bundled speech recordings with each candidate server
resampler and reports the signal-to-noise ratio of what the caller would hear against what the
caller sent (after removing the path's constant delay), in the whole 0-4 kHz band and in the
300-3400 Hz phone band, and how much audio each streaming resampler holds back per 40 ms chunk
(latency every caller pays, each way), against soxr VHQ run on the whole signal at once.
"""

from __future__ import annotations

import argparse
import asyncio
import audioop
import sys
from pathlib import Path

import numpy as np
import soxr
from pipecat.audio.resamplers.base_audio_resampler import BaseAudioResampler
from pipecat.audio.resamplers.soxr_stream_resampler import SOXRStreamAudioResampler

from pipelines.audio.resampling import FirStreamResampler
from sim.caller.plan import read_wav_as_ulaw

ASSETS = Path(__file__).resolve().parent.parent / "assets"
SPEECH = ("caller_question.wav", "caller_long.wav", "bot_long_answer.wav")
CHUNK_SECS = 0.04
MAX_LAG = 400  # samples at 8 kHz searched for the path's delay
PHONE_BAND = (300.0, 3400.0)


def load_8k(path: Path) -> np.ndarray:
    """A bundled recording as Twilio delivers it (8 kHz mu-law), decoded to int16 PCM."""
    return np.frombuffer(audioop.ulaw2lin(read_wav_as_ulaw(path), 2), np.int16)


HELD_MS: list[float] = []  # per chunk: audio fed minus audio returned so far (ms)


async def stream(resampler: BaseAudioResampler, x: np.ndarray, src: int, dst: int) -> np.ndarray:
    """Resample ``x`` in 40 ms chunks, then flush: what a call does (notes ``HELD_MS``)."""
    step = int(src * CHUNK_SECS)
    parts, fed, got = [], 0, 0
    for i in range(0, len(x), step):
        parts.append(await resampler.resample(x[i : i + step].tobytes(), src, dst))
        fed, got = fed + len(x[i : i + step]), got + len(parts[-1]) // 2
        HELD_MS.append(1000 * (fed / src - got / dst))
    flush = getattr(resampler, "flush", None)
    if flush is not None:
        parts.append(await flush())
    return np.frombuffer(b"".join(parts), np.int16)


def band(
    x: np.ndarray, low_hz: float = PHONE_BAND[0], high_hz: float = PHONE_BAND[1]
) -> np.ndarray:
    """``x`` (8 kHz) restricted to the telephone band, by zeroing FFT bins outside it."""
    spec = np.fft.rfft(x.astype(np.float64))
    freqs = np.fft.rfftfreq(len(x), 1 / 8000)
    spec[(freqs < low_hz) | (freqs > high_hz)] = 0
    return np.fft.irfft(spec, len(x))


def snr_db(ref: np.ndarray, out: np.ndarray) -> tuple[float, float, int]:
    """Full-band and phone-band SNR of ``out`` against ``ref`` at the best delay, and the delay."""
    n = len(ref) - MAX_LAG
    r = ref[:n].astype(np.float64)
    scores = []
    for lag in range(MAX_LAG):
        o = out[lag : lag + n].astype(np.float64)
        if len(o) < n:
            break
        scores.append((float(np.sum((o - r) ** 2)), lag))
    noise, lag = min(scores)
    full = 10 * np.log10(np.sum(r**2) / max(noise, 1e-9))
    rb, ob = band(r), band(out[lag : lag + n])
    inband = 10 * np.log10(np.sum(rb**2) / max(float(np.sum((ob - rb) ** 2)), 1e-9))
    return float(full), float(inband), lag


async def round_trip(x8: np.ndarray, make: type[BaseAudioResampler]) -> np.ndarray:
    """The call path with server resamplers from ``make``."""
    if make is _SoxrBatch:
        x16 = await make().resample(x8.tobytes(), 8000, 16000)
        x24 = soxr.resample(
            np.frombuffer(x16, np.int16).astype(np.float32), 16000, 24000, quality="HQ"
        )
        y8 = np.frombuffer(
            await make().resample(x24.astype(np.int16).tobytes(), 24000, 8000), np.int16
        )
    else:
        x16a = await stream(make(), x8, 8000, 16000)
        x24 = soxr.resample(x16a.astype(np.float32), 16000, 24000, quality="HQ").astype(np.int16)
        y8 = await stream(make(), x24, 24000, 8000)
    return np.frombuffer(audioop.ulaw2lin(audioop.lin2ulaw(y8.tobytes(), 2), 2), np.int16)


class _FirBefore(FirStreamResampler):
    """The FIR as first built: 32 taps per factor, beta 8, cut-off at 0.9 of Nyquist."""

    FILTER = (32, 8.0, 0.9)


class _SoxrVhq(SOXRStreamAudioResampler):
    def __init__(self) -> None:
        super().__init__(clear_after_secs=None)


class _SoxrBatch(BaseAudioResampler):
    """Whole-signal soxr VHQ (not streaming): the best this chain can do."""

    async def resample(self, audio: bytes, in_rate: int, out_rate: int) -> bytes:
        x = np.frombuffer(audio, np.int16).astype(np.float32)
        return soxr.resample(x, in_rate, out_rate, quality="VHQ").astype(np.int16).tobytes()


CANDIDATES: dict[str, type[BaseAudioResampler]] = {
    "soxr VHQ, whole signal (reference)": _SoxrBatch,
    "FIR 73/49 taps (ours)": FirStreamResampler,
    "FIR 97/65 taps (before)": _FirBefore,
    "soxr VHQ stream (Pipecat default)": _SoxrVhq,
}


async def measure(files: tuple[str, ...] = SPEECH) -> dict[str, dict[str, float]]:
    """SNR (dB) and delay (ms) per candidate, averaged over ``files``."""
    out: dict[str, dict[str, float]] = {}
    for name, make in CANDIDATES.items():
        full, inband, lags = [], [], []
        HELD_MS.clear()
        for f in files:
            x8 = load_8k(ASSETS / f)
            snr, snr_band, lag = snr_db(x8, await round_trip(x8, make))
            full.append(snr)
            inband.append(snr_band)
            lags.append(lag / 8.0)
        out[name] = {
            "snr_db": float(np.mean(full)),
            "band_snr_db": float(np.mean(inband)),
            "delay_ms": float(np.mean(lags)),
            "held_mean_ms": float(np.mean(HELD_MS)) if HELD_MS else 0.0,
            "held_max_ms": float(np.max(HELD_MS)) if HELD_MS else 0.0,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the table."""
    argparse.ArgumentParser(
        prog="python -m sim.bench.audio_quality", description=__doc__.split("\n")[0]
    ).parse_args(argv)
    results = asyncio.run(measure())
    print(
        f"{'server resampler':36s} {'SNR 0-4 kHz':>12s} {'SNR 300-3400 Hz':>16s} "
        f"{'held back mean/max':>19s} {'filter delay':>13s}"
    )
    for name, r in results.items():
        held = f"{r['held_mean_ms']:.1f}/{r['held_max_ms']:.1f} ms"
        print(
            f"{name:36s} {r['snr_db']:9.1f} dB {r['band_snr_db']:13.1f} dB {held:>19s} "
            f"{r['delay_ms']:10.1f} ms"
        )
    print("(held back: after each 40 ms chunk, both ways averaged; filter delay: round trip)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
