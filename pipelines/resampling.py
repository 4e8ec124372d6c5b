"""Low-latency streaming resampler for telephony audio.

Pipecat's default stream resampler (soxr ``VHQ``) holds audio back and releases it in lumps:
measured 64 ms mean / 111 ms max for 8 kHz -> 16 kHz in 20 ms chunks and 85 ms mean / 152 ms max
for 24 kHz -> 8 kHz in 40 ms chunks. ``FirStreamResampler`` is a polyphase windowed-sinc (Kaiser)
FIR that keeps its history across chunks and returns every output sample it can compute at once:
its only latency is the filter's group delay (about 2 ms for 24 k -> 8 k, 1 ms for 8 k -> 16 k).
Rates whose ratio does not reduce to small integers fall back to soxr ``LQ``.
"""

from __future__ import annotations

import math

import numpy as np
from pipecat.audio.resamplers.base_audio_resampler import BaseAudioResampler
from pipecat.audio.resamplers.soxr_stream_resampler import SOXRStreamAudioResampler

# Largest up/down factor handled by the FIR path (covers 8/16/24/48 kHz pairs).
MAX_FACTOR = 6
# Filter length per factor unit and the Kaiser beta (~80 dB stop band).
TAPS_PER_FACTOR = 32
KAISER_BETA = 8.0
# Cut-off as a fraction of the lower Nyquist frequency (3.6 kHz at an 8 kHz side).
CUTOFF_FRACTION = 0.9


def design_lowpass(up: int, down: int) -> np.ndarray:
    """Design the anti-alias/anti-image filter for an ``up/down`` rational resampler.

    Args:
        up: Interpolation factor L.
        down: Decimation factor M.

    Returns:
        FIR taps (odd length, DC gain ``up``) for the upsampled-domain signal.
    """
    factor = max(up, down)
    num_taps = TAPS_PER_FACTOR * factor + 1
    cutoff = CUTOFF_FRACTION / factor  # cycles per upsampled sample * 2 (Nyquist = 1)
    n = np.arange(num_taps) - (num_taps - 1) / 2
    taps = cutoff * np.sinc(cutoff * n) * np.kaiser(num_taps, KAISER_BETA)
    return taps * (up / taps.sum())


class FirStreamResampler(BaseAudioResampler):
    """Stateful polyphase FIR resampler for mono int16 PCM with about 1-2 ms latency.

    One instance serves one stream at one pair of rates (like Pipecat's soxr stream
    resampler). ``flush()`` returns the filter tail; ``reset()`` discards it.
    """

    def __init__(self) -> None:
        """Create an uninitialised resampler; rates are fixed by the first ``resample()``."""
        self._rates: tuple[int, int] | None = None
        self._fallback: SOXRStreamAudioResampler | None = None
        self._up = 1
        self._down = 1
        self._taps = np.zeros(1)
        self._branches = np.zeros((1, 1))
        self._dtype: type[np.floating] = np.float64
        self._history = np.zeros(0, dtype=self._dtype)
        self._phases: list[np.ndarray] = []
        self._next_pos = 0

    def _init(self, in_rate: int, out_rate: int) -> None:
        self._rates = (in_rate, out_rate)
        g = math.gcd(in_rate, out_rate)
        up, down = out_rate // g, in_rate // g
        if max(up, down) > MAX_FACTOR:
            self._fallback = SOXRStreamAudioResampler(quality="LQ", clear_after_secs=None)
            return
        self._up, self._down = up, down
        taps = design_lowpass(up, down)
        sub_len = math.ceil(len(taps) / up)
        taps = np.concatenate((taps, np.zeros(sub_len * up - len(taps))))
        # Row r is polyphase branch r (taps r, r+L, ...), reversed so a dot product with an
        # ascending window of input samples is the convolution.
        self._taps = taps
        self._branches = taps.reshape(sub_len, up).T[:, ::-1].copy()
        self._history = np.zeros(sub_len - 1, dtype=np.float32)
        self._phases = [self._branches[0][p::down].astype(np.float32) for p in range(down)]
        self._branches = self._branches.astype(np.float32)
        self._next_pos = 0

    @property
    def delay_secs(self) -> float:
        """Group delay of the filter in seconds (0 before the first call)."""
        if self._rates is None or self._fallback is not None:
            return 0.0
        return (len(self._taps) - 1) / 2 / (self._rates[0] * self._up)

    def _run(self, samples: np.ndarray) -> np.ndarray:
        sub_len = self._branches.shape[1]
        buf = np.concatenate((self._history, samples))
        self._history = buf[len(buf) - (sub_len - 1) :]
        # Outputs computable now sit at upsampled positions next_pos, next_pos + M, ...
        # (relative to this chunk) below L * len(samples).
        end = self._up * len(samples)
        count = max(0, -(-(end - self._next_pos) // self._down))
        first = self._next_pos
        self._next_pos += count * self._down - end
        if count == 0:
            return np.zeros(0, dtype=np.int16)
        item = buf.itemsize
        if self._up == 1:
            # Plain decimation, polyphase: one C-level correlation per input phase (2x faster
            # than a matrix product over strided windows).
            down = self._down
            out = np.zeros(count, dtype=buf.dtype)
            for p, g in enumerate(self._phases):
                out += np.correlate(buf[first + p :: down][: count + len(g) - 1], g, "valid")
        else:
            row0 = first // self._up
            row1 = (first + (count - 1) * self._down) // self._up
            windows = np.ndarray(
                (row1 - row0 + 1, sub_len),
                dtype=buf.dtype,
                buffer=buf,
                offset=row0 * item,
                strides=(item, item),
            )
            per_branch = windows @ self._branches.T
            if self._down == 1:
                start = first - row0 * self._up
                out = per_branch.ravel()[start : start + count]
            else:
                positions = first + np.arange(count) * self._down
                out = per_branch[positions // self._up - row0, positions % self._up]
        np.rint(out, out=out)
        np.clip(out, -32768, 32767, out=out)
        return out.astype(np.int16)

    async def resample(self, audio: bytes, in_rate: int, out_rate: int) -> bytes:
        """Resample 16-bit mono PCM, returning all output available so far.

        Args:
            audio: Input PCM bytes (int16, mono).
            in_rate: Input sample rate in Hz.
            out_rate: Output sample rate in Hz.

        Returns:
            Resampled PCM bytes.

        Raises:
            ValueError: When called again with a different pair of rates.
        """
        if in_rate == out_rate:
            return audio
        if self._rates is None:
            self._init(in_rate, out_rate)
        elif self._rates != (in_rate, out_rate):
            raise ValueError(
                f"FirStreamResampler is fixed at {self._rates[0]}->{self._rates[1]} Hz, "
                f"got {in_rate}->{out_rate}; create one resampler per stream"
            )
        if self._fallback is not None:
            return await self._fallback.resample(audio, in_rate, out_rate)
        if not audio:
            return b""
        return self._run(np.frombuffer(audio, dtype=np.int16).astype(self._dtype)).tobytes()

    async def flush(self) -> bytes:
        """Return the audio still inside the filter and reset it.

        Returns:
            The tail (about one group delay of audio) as PCM bytes.
        """
        if self._fallback is not None:
            return await self._fallback.flush()
        if self._rates is None:
            return b""
        pad = math.ceil((len(self._taps) - 1) / 2 / self._up)
        tail = self._run(np.zeros(pad, dtype=self._dtype)).tobytes()
        await self.reset()
        return tail

    async def reset(self) -> None:
        """Discard the filter state so the next audio starts a new stream."""
        if self._fallback is not None:
            await self._fallback.reset()
            return
        self._history = np.zeros(self._branches.shape[1] - 1, dtype=self._dtype)
        self._next_pos = 0
