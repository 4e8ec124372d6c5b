"""Reply audio: WAV files, a tone, or the caller's own utterance, as ``modelTurn`` messages.

File and tone replies are encoded once per process and shared by every session.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soxr

from sim.emulator import protocol

TONE_HZ = 440.0


@dataclass(frozen=True)
class ReplyAudio:
    """A reply ready to send.

    Attributes:
        messages: ``modelTurn`` messages, in order, each ``chunk_secs`` long (the last may be
            shorter).
        secs: Total audio length.
        chunk_secs: Audio per message.
        label: Output transcription placeholder.
    """

    messages: tuple[bytes, ...]
    secs: float
    chunk_secs: float
    label: str


def to_24k(samples: np.ndarray, rate_hz: int) -> np.ndarray:
    """PCM16 samples at any rate resampled to 24 kHz PCM16."""
    if rate_hz == protocol.OUTPUT_RATE_HZ or samples.size == 0:
        return samples.astype(np.int16, copy=False)
    out = soxr.resample(samples.astype(np.float32) / 32768.0, rate_hz, protocol.OUTPUT_RATE_HZ)
    return np.clip(out * 32768.0, -32768, 32767).astype(np.int16)


def chunked(samples_24k: np.ndarray, chunk_ms: int, label: str) -> ReplyAudio:
    """Cut 24 kHz audio into ``modelTurn`` messages."""
    step = protocol.OUTPUT_RATE_HZ * chunk_ms // 1000
    pcm = samples_24k.astype("<i2", copy=False).tobytes()
    messages = tuple(
        protocol.audio_chunk(pcm[i : i + 2 * step]) for i in range(0, len(pcm), 2 * step)
    )
    secs = samples_24k.size / protocol.OUTPUT_RATE_HZ
    return ReplyAudio(messages, secs, chunk_ms / 1000, label)


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """PCM16 mono samples and rate of a WAV file.

    Raises:
        ValueError: The file is not 16-bit PCM mono, with what it is instead.
    """
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2 or wav.getnchannels() != 1:
            raise ValueError(
                f"{path}: expected 16-bit PCM mono WAV, got {wav.getsampwidth() * 8}-bit "
                f"{wav.getnchannels()}-channel; convert it with e.g. "
                "`sox in.wav -b 16 -c 1 out.wav`"
            )
        rate = wav.getframerate()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    return samples, rate


@lru_cache(maxsize=16)
def wav_reply(path: Path, chunk_ms: int, max_secs: float | None = None) -> ReplyAudio:
    """A WAV file as a reply (cached per file, chunk size and cut)."""
    samples, rate = read_wav(path)
    samples = to_24k(samples, rate)
    if max_secs is not None:
        samples = fade_out(samples[: int(max_secs * protocol.OUTPUT_RATE_HZ)])
    secs = samples.size / protocol.OUTPUT_RATE_HZ
    return chunked(samples, chunk_ms, f"[bot audio {secs:.2f} s]")


@lru_cache(maxsize=8)
def tone_reply(secs: float, chunk_ms: int) -> ReplyAudio:
    """A 440 Hz tone at -12 dBFS with 10 ms ramps (cached)."""
    t = np.arange(int(secs * protocol.OUTPUT_RATE_HZ)) / protocol.OUTPUT_RATE_HZ
    samples = (0.25 * 32767 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.int16)
    return chunked(fade_out(samples), chunk_ms, f"[bot tone {secs:.2f} s]")


def echo_reply(samples: np.ndarray, rate_hz: int, chunk_ms: int) -> ReplyAudio:
    """The caller's utterance replayed at 24 kHz."""
    out = to_24k(samples, rate_hz)
    return chunked(out, chunk_ms, f"[echo of caller audio {samples.size / rate_hz:.2f} s]")


def fade_out(samples: np.ndarray, ramp: int = 240) -> np.ndarray:
    """Fade the last ``ramp`` samples to silence so a cut reply does not click."""
    out = samples.astype(np.float32)
    n = min(ramp, out.size // 2)
    if n:
        out[-n:] *= np.linspace(1.0, 0.0, n, dtype=np.float32)
    return out.astype(np.int16)
