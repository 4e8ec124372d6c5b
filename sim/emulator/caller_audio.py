"""Caller-side audio for tests and the benchmark: read the shipped caller WAVs as PCM16."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from sim.emulator.voices import to_24k

_ULAW = 7
_PCM = 1


def _ulaw_to_pcm16(data: bytes) -> np.ndarray:
    """G.711 mu-law bytes to PCM16 samples (vectorised)."""
    u = ~np.frombuffer(data, dtype=np.uint8)
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa.astype(np.int32) << 3) + 0x84) << exponent) - 0x84
    return np.where(sign != 0, -magnitude, magnitude).astype(np.int16)


def read_caller_wav(path: Path, rate_hz: int = 16_000) -> np.ndarray:
    """A mu-law (format 7) or PCM16 mono WAV as PCM16 samples at ``rate_hz``.

    Raises:
        ValueError: The file is not a mono mu-law or PCM16 WAV.
    """
    data = path.read_bytes()
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError(f"{path}: not a RIFF/WAVE file")
    pos, fmt, rate, samples = 12, 0, 0, None
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = data[pos + 8 : pos + 8 + size]
        if cid == b"fmt ":
            fmt, channels, rate = struct.unpack("<HHI", body[:8])
            if channels != 1:
                raise ValueError(f"{path}: expected mono, got {channels} channels")
        elif cid == b"data":
            if fmt == _ULAW:
                samples = _ulaw_to_pcm16(body)
            elif fmt == _PCM:
                samples = np.frombuffer(body[: len(body) & ~1], dtype="<i2")
            else:
                raise ValueError(f"{path}: format tag {fmt}; expected 1 (PCM) or 7 (mu-law)")
        pos += 8 + size + (size & 1)
    if samples is None:
        raise ValueError(f"{path}: no data chunk")
    if rate == rate_hz:
        return samples
    if rate_hz == 24_000:
        return to_24k(samples, rate)
    import soxr

    out = soxr.resample(samples.astype(np.float32) / 32768.0, rate, rate_hz)
    return np.clip(out * 32768.0, -32768, 32767).astype(np.int16)
