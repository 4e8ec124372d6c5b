"""Pre-recorded clips the call plays when the model cannot speak: loaded once, at model rate.

The watchdog (``pipelines.call.watchdog``) plays a holding phrase and an apology that must not
depend on the model. A clip is a mono 16-bit WAV at 8, 16 or 24 kHz (the persona's own, checked
at load by ``pipelines.personas.checks``, or one shipped in ``pipelines/call/clips/``). It is
resampled once to the model's 24 kHz, so it joins the bot's audio stream in the output
transport (one stream resampler per call, 24 k -> 8 k) like model audio; the result is cached
per file, so only the first call of the process reads it (a few ms, a ~100 kB file).
"""

from __future__ import annotations

import functools
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

CLIP_RATE_HZ = 24000


@dataclass(frozen=True)
class Clip:
    """One clip as 24 kHz mono PCM16.

    Attributes:
        name: The file name (for logs).
        audio: The samples, little-endian PCM16 at ``CLIP_RATE_HZ``.
    """

    name: str
    audio: bytes

    @property
    def secs(self) -> float:
        """The clip's length in seconds."""
        return len(self.audio) / (CLIP_RATE_HZ * 2)


@functools.lru_cache(maxsize=32)
def load_clip(path: Path) -> Clip:
    """Read ``path`` and resample it to 24 kHz (cached per path).

    Raises:
        ValueError: The file is not a mono 16-bit WAV at 8, 16 or 24 kHz, with the fix.
    """
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            raw = w.readframes(w.getnframes())
    except (OSError, EOFError, wave.Error) as e:
        raise ValueError(
            f"clip {path}: cannot read it as WAV ({e}); expected a mono 16-bit WAV at 8, 16 or "
            "24 kHz. Fix: point the persona's watchdog clip at such a file"
        ) from e
    if channels != 1 or width != 2 or rate not in (8000, 16000, 24000) or not raw:
        raise ValueError(
            f"clip {path}: got {channels} channel(s), {8 * width}-bit, {rate} Hz, "
            f"{len(raw)} bytes; expected mono 16-bit audio at 8, 16 or 24 kHz. Fix: "
            "`sox IN.wav -r 8000 -c 1 -b 16 OUT.wav`"
        )
    samples = np.frombuffer(raw, dtype="<i2")
    if rate != CLIP_RATE_HZ:
        out = soxr.resample(samples.astype(np.float32), rate, CLIP_RATE_HZ, quality="HQ")
        samples = np.clip(np.round(out), -32768, 32767).astype("<i2")
    return Clip(path.name, samples.tobytes())
