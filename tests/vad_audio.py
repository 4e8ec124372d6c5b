"""Audio for the local VAD tests: the bundled caller speech and the simulated line noise."""

from __future__ import annotations

import audioop
from pathlib import Path

import numpy as np

from sim.caller.line_noise import noise_bank

ASSETS = Path(__file__).resolve().parent.parent / "sim" / "assets"
RATE = 8000
CHUNK_BYTES = RATE * 2 * 40 // 1000  # one 40 ms batch of the transport input


def speech_pcm(name: str) -> bytes:
    """A mu-law WAV of sim/assets as 16-bit PCM at 8 kHz (the caller's own rate)."""
    raw = (ASSETS / name).read_bytes()
    return audioop.ulaw2lin(raw[raw.index(b"data") + 8 :], 2)


def line_noise(dbfs: float | None, n_bytes: int) -> bytes:
    """``n_bytes`` of the simulated caller's pink line noise at ``dbfs`` (None: silence)."""
    if dbfs is None:
        return bytes(n_bytes)
    bank = audioop.ulaw2lin(b"".join(noise_bank(float(dbfs), "pink").raw), 2)
    return (bank * (n_bytes // len(bank) + 1))[:n_bytes]


def mixed(pcm: bytes, noise: bytes) -> bytes:
    """``pcm`` plus ``noise`` (same length), clipped to 16 bits."""
    a = np.frombuffer(pcm, np.int16).astype(np.int32) + np.frombuffer(noise, np.int16)
    return np.clip(a, -32768, 32767).astype(np.int16).tobytes()


def conversation(dbfs: float | None) -> bytes:
    """1 s quiet, a question, 2 s, a barge-in, 1 s, a long answer, 1 s; on a line at ``dbfs``."""
    gap = bytes(RATE * 2)
    speech = (
        gap
        + speech_pcm("caller_question.wav")
        + gap
        + gap
        + speech_pcm("caller_bargein.wav")
        + gap
        + speech_pcm("caller_long.wav")
        + gap
    )
    return mixed(speech, line_noise(dbfs, len(speech)))


def chunks(pcm: bytes) -> list[bytes]:
    """Whole 40 ms chunks of ``pcm``."""
    return [pcm[i : i + CHUNK_BYTES] for i in range(0, len(pcm) - CHUNK_BYTES + 1, CHUNK_BYTES)]
