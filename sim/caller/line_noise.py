"""What a phone line adds to the caller's voice: line noise and a faint echo of the bot.

No phone line is digitally silent. Between and under the caller's words the simulated caller
sends noise band-limited to 100-3800 Hz at a level in dBFS (RMS against a full-scale square
wave, 32768, the emulator's VAD reference), and optionally the bot's own audio leaking back from
the handset, attenuated and delayed.

Cost is paid once per process, never per frame: :func:`noise_bank` renders several seconds of
noise per (level, colour) as base64 µ-law payloads that each call loops over from a random
offset (the noise is shaped in the frequency domain over the whole bank, so the loop point is
seamless); :func:`speech_mix` mixes an utterance with noise once per (utterance, level, colour).
Only the echo is mixed per frame, and only while bot audio is playing.
"""

from __future__ import annotations

import audioop
import base64
import functools
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # numpy is imported where a bank is built: the CLI and the core stay light
    import numpy as np

    from sim.caller.plan import Utterance

SAMPLE_RATE_HZ = 8000
FRAME_BYTES = 160  # 20 ms of 8 kHz µ-law
ULAW_SILENCE = 0xFF
NoiseColor = Literal["white", "pink"]
NOISE_COLORS: tuple[str, ...] = ("white", "pink")
FULL_SCALE = 32768.0

DEFAULT_LINE_NOISE_DBFS: float | None = -45.0
"""The line every simulated call is on unless told otherwise (None: digital silence).

−45 dBFS of pink noise is an ordinary noisy line rather than a worst case: the issue's
"noisy line" is −44 dBFS, a mobile caller in a quiet room or the comfort noise a VoIP leg
inserts sits around −50 to −40 dBFS, and a clean digital trunk idles near −70 dBFS (which no
caller with a handset to their face produces). Pink, because room, handset and codec noise
fall with frequency. It sits right on the energy threshold a naive VAD uses (−45 dBFS), which
is what makes it the honest default: a VAD that fires on it fires on real lines.
"""
DEFAULT_LINE_NOISE_COLOR: NoiseColor = "pink"
DEFAULT_ECHO_DELAY_MS = 40.0
"""Handset echo path: the phone's own playout-to-microphone path plus the uplink jitter buffer
(acoustic leak ~1 ms, codec frames and buffers 20-60 ms)."""
BANK_SECS = 8.0
LOW_CUT_HZ = 100.0  # handsets and codecs pass little below ~100 Hz
HIGH_CUT_HZ = 3800.0  # the 8 kHz codec's anti-alias roll-off


@dataclass(frozen=True)
class LineNoise:
    """The caller's line: noise level and colour, and an optional echo of the bot's audio.

    Attributes:
        dbfs: noise RMS in dBFS (e.g. -45); None sends digital silence (µ-law 0xFF).
        color: ``white`` (flat) or ``pink`` (-3 dB per octave).
        echo_db: the bot's audio as heard, attenuated by this many dB and mixed into what the
            caller sends; None for no echo.
        echo_delay_ms: how long after the caller hears the bot its echo is sent.
    """

    dbfs: float | None = DEFAULT_LINE_NOISE_DBFS
    color: NoiseColor = DEFAULT_LINE_NOISE_COLOR
    echo_db: float | None = None
    echo_delay_ms: float = DEFAULT_ECHO_DELAY_MS

    def __post_init__(self) -> None:
        if self.color not in NOISE_COLORS:
            raise ValueError(
                f"line noise color: got {self.color!r}, expected one of {', '.join(NOISE_COLORS)}"
            )
        if self.dbfs is not None and not -120.0 <= self.dbfs <= -3.0:
            raise ValueError(
                f"line noise level: got {self.dbfs:g} dBFS, expected -120 to -3 dBFS "
                "(e.g. -45) or 'off'"
            )
        if self.echo_db is not None and not 0.0 <= self.echo_db <= 120.0:
            raise ValueError(
                f"echo attenuation: got {self.echo_db:g} dB, expected 0 to 120 dB (e.g. 30)"
            )
        if not 0.0 <= self.echo_delay_ms <= 1000.0:
            raise ValueError(
                f"echo delay: got {self.echo_delay_ms:g} ms, expected 0 to 1000 ms (e.g. 40)"
            )

    def describe(self) -> str:
        """E.g. ``pink noise -45 dBFS, echo -30 dB after 40 ms`` or ``digital silence, no echo``."""
        return describe_line(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """``{"dbfs", "color", "echo_db", "echo_delay_ms"}`` (JSON-ready)."""
        return asdict(self)


def describe_line(d: dict[str, Any]) -> str:
    """Human-readable form of :meth:`LineNoise.to_dict` (plus ``playout_delay_ms`` if present)."""
    if not d:
        return "not stated"
    dbfs = d.get("dbfs")
    text = "digital silence" if dbfs is None else f"{d.get('color')} noise {dbfs:g} dBFS"
    echo = d.get("echo_db")
    if echo is None:
        text += ", no echo"
    else:
        text += f", echo -{echo:g} dB after {d.get('echo_delay_ms', DEFAULT_ECHO_DELAY_MS):g} ms"
    if d.get("playout_delay_ms") is not None:
        text += f", playout delay {d['playout_delay_ms']:g} ms"
    return text


def parse_dbfs(text: str | float | None) -> float | None:
    """``off`` (or ``none``) -> None; a number -> dBFS. For command-line flags and env vars.

    Raises:
        ValueError: neither ``off`` nor a number.
    """
    if text is None or isinstance(text, int | float):
        return None if text is None else float(text)
    t = text.strip().lower().removesuffix("dbfs").strip()
    if t in ("off", "none", "silence"):
        return None
    try:
        return float(t)
    except ValueError:
        raise ValueError(
            f"line noise level: got {text!r}, expected dBFS such as -45, or 'off'"
        ) from None


def dbfs_of_pcm(pcm: bytes) -> float:
    """RMS level of 16-bit PCM in dBFS (-inf for digital silence)."""
    rms = audioop.rms(pcm, 2) if pcm else 0
    return 20 * math.log10(rms / FULL_SCALE) if rms else -math.inf


@dataclass(frozen=True, eq=False)
class FrameSet:
    """20 ms µ-law frames, both raw (for mixing) and as base64 payloads (for sending)."""

    payloads: tuple[str, ...]
    raw: tuple[bytes, ...]

    @classmethod
    def from_ulaw(cls, ulaw: bytes) -> FrameSet:
        """Cut whole frames of µ-law audio (a partial last frame is padded with silence)."""
        ulaw += bytes([ULAW_SILENCE]) * ((-len(ulaw)) % FRAME_BYTES)
        raw = tuple(ulaw[i : i + FRAME_BYTES] for i in range(0, len(ulaw), FRAME_BYTES))
        return cls(tuple(base64.b64encode(f).decode() for f in raw), raw)


SILENCE_FRAMES = FrameSet.from_ulaw(bytes([ULAW_SILENCE]) * FRAME_BYTES)


def _shaped_noise(n: int, color: str, seed: int) -> np.ndarray:
    """``n`` samples of unit-RMS noise of ``color``, band-limited, periodic over ``n``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE_HZ)
    band = (freqs >= LOW_CUT_HZ) & (freqs <= HIGH_CUT_HZ)
    shape = np.zeros_like(freqs)
    shape[band] = 1.0 if color == "white" else 1.0 / np.sqrt(freqs[band])
    x = np.fft.irfft(spectrum * shape, n)
    return x / float(np.sqrt(np.mean(x**2)))


def _to_ulaw_at(x: np.ndarray, dbfs: float) -> bytes:
    """Scale unit-RMS ``x`` so its µ-law encoding decodes at ``dbfs``; the µ-law bytes."""
    import numpy as np

    target = FULL_SCALE * 10 ** (dbfs / 20)
    gain = target
    for _ in range(3):  # µ-law rounding shifts the level slightly at low levels: correct it
        pcm = np.clip(np.rint(x * gain), -32768, 32767).astype("<i2").tobytes()
        ulaw = audioop.lin2ulaw(pcm, 2)
        got = audioop.rms(audioop.ulaw2lin(ulaw, 2), 2)
        if not got:
            break
        gain *= target / got
    return ulaw


@functools.lru_cache(maxsize=16)
def noise_bank(dbfs: float, color: str, secs: float = BANK_SECS) -> FrameSet:
    """``secs`` of ``color`` noise at ``dbfs`` as 20 ms frames (built once per process).

    The noise is periodic over the bank, so looping it has no seam.
    """
    frames = int(secs / (FRAME_BYTES / SAMPLE_RATE_HZ))
    x = _shaped_noise(frames * FRAME_BYTES, color, seed=NOISE_COLORS.index(color) + 1)
    return FrameSet.from_ulaw(_to_ulaw_at(x, dbfs))


def bank_for(noise: LineNoise) -> FrameSet:
    """The frames a call loops over between utterances (one silent frame when noise is off)."""
    return SILENCE_FRAMES if noise.dbfs is None else noise_bank(noise.dbfs, noise.color)


@functools.lru_cache(maxsize=256)
def speech_mix(utterance: Utterance, dbfs: float | None, color: str) -> FrameSet:
    """``utterance`` with line noise under it (cached per utterance, level and colour)."""
    ulaw = b"".join(base64.b64decode(p) for p in utterance.payloads)
    if dbfs is None:
        return FrameSet(utterance.payloads, FrameSet.from_ulaw(ulaw).raw)
    bank = noise_bank(dbfs, color)
    noise = b"".join(bank.raw)
    reps = -(-len(ulaw) // len(noise))
    noise_pcm = audioop.ulaw2lin((noise * reps)[: len(ulaw)], 2)
    mixed = audioop.add(audioop.ulaw2lin(ulaw, 2), noise_pcm, 2)  # saturates, never wraps
    return FrameSet.from_ulaw(audioop.lin2ulaw(mixed, 2))


def echo_gain(echo_db: float | None) -> float | None:
    """Linear gain for an attenuation in dB (None: no echo)."""
    return None if echo_db is None else 10 ** (-echo_db / 20)


SILENT_FRAME = bytes([ULAW_SILENCE]) * FRAME_BYTES


def mix_echo(frame: bytes, echo: bytes, gain: float) -> str:
    """One outbound frame (raw µ-law) with ``echo`` (raw µ-law) mixed in at ``gain``; base64."""
    pcm = audioop.add(
        audioop.ulaw2lin(frame, 2), audioop.mul(audioop.ulaw2lin(echo, 2), 2, gain), 2
    )
    return base64.b64encode(audioop.lin2ulaw(pcm, 2)).decode()
