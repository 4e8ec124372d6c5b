"""What a simulated caller does: call plans, their steps, and the caller's audio.

A :class:`CallPlan` is an ordered list of steps (wait for the greeting, say an utterance, wait for
the reply, barge in, press keys, pause, hang up) and the line it is placed on (noise, echo,
playout delay). Utterances are cut once into 20 ms µ-law frames whose base64 payloads are
precomputed, so sending a frame costs one string format.
"""

from __future__ import annotations

import asyncio
import audioop
import base64
import functools
import struct
from dataclasses import dataclass, field
from pathlib import Path

from sim.caller.line_noise import FRAME_BYTES, SAMPLE_RATE_HZ, ULAW_SILENCE, LineNoise

FRAME_SECS = FRAME_BYTES / SAMPLE_RATE_HZ
DEFAULT_PLAYOUT_DELAY_SECS = 0.06
"""Twilio's own buffering before received audio plays (its jitter buffer and the downlink to the
handset): a realistic few tens of ms, so latencies are measured to when the caller hears."""
DEFAULT_STREAM_CONNECT_SECS = 0.3
"""Twilio's delay between reading the TwiML and the stream's ``start``: its media server opens a
TLS WebSocket to the bot (DNS, TCP and TLS round trips over the internet) before it sends
``connected`` and ``start``; reported at ~0.5 s from the webhook to ``start`` in production
(gptme-contrib#792), part of which is the webhook's own round trip. 0 connects at once."""
SILENCE_PAYLOAD = base64.b64encode(bytes([ULAW_SILENCE]) * FRAME_BYTES).decode()
ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_SILENCE_RMS = 200.0
"""RMS (of the µ-law frame decoded to PCM16) above which a frame counts as non-silent."""


def ulaw_rms(ulaw: bytes) -> float:
    """RMS level of µ-law audio decoded to 16-bit PCM (0 for digital silence 0xFF/0x7F)."""
    if not ulaw:
        return 0.0
    return float(audioop.rms(audioop.ulaw2lin(ulaw, 2), 2))


def read_wav_as_ulaw(path: str | Path) -> bytes:
    """Read a mono WAV (µ-law 8 kHz, or PCM16 at any rate) and return 8 kHz µ-law bytes.

    Raises:
        ValueError: the file is not a RIFF/WAVE file, not mono, or not µ-law/PCM16.
    """
    data = Path(path).read_bytes()
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError(f"{path}: expected a RIFF/WAVE file, found {data[:12]!r}")
    pos, fmt, rate, channels, bits, pcm = 12, -1, 0, 0, 0, b""
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = data[pos + 8 : pos + 8 + size]
        if cid == b"fmt ":
            fmt, channels, rate = struct.unpack("<HHI", body[:8])
            bits = struct.unpack("<H", body[14:16])[0]
        elif cid == b"data":
            pcm = body
        pos += 8 + size + (size & 1)
    if channels != 1:
        raise ValueError(
            f"{path}: expected mono audio, found {channels} channels; convert with sox"
        )
    if fmt == 7 and rate == SAMPLE_RATE_HZ:
        return pcm
    if fmt == 1 and bits == 16:
        return pcm16_to_ulaw(pcm, rate)
    raise ValueError(
        f"{path}: expected µ-law 8 kHz (format 7) or PCM16 (format 1), found format {fmt}, "
        f"{bits} bits, {rate} Hz; convert with `sox IN -r 8000 -e u-law OUT.wav`"
    )


def pcm16_to_ulaw(pcm: bytes, rate_hz: int = SAMPLE_RATE_HZ) -> bytes:
    """Convert a whole PCM16 mono clip to 8 kHz µ-law (one-shot resample: no state is lost)."""
    if rate_hz != SAMPLE_RATE_HZ:
        pcm, _ = audioop.ratecv(pcm, 2, 1, rate_hz, SAMPLE_RATE_HZ, None)
    return audioop.lin2ulaw(pcm, 2)


@dataclass(frozen=True, eq=False)
class Utterance:
    """Caller audio cut into 20 ms frames, payloads base64-encoded once."""

    name: str
    payloads: tuple[str, ...] = field(repr=False)

    @classmethod
    def from_ulaw(cls, ulaw: bytes, name: str = "audio") -> Utterance:
        """Frames from raw 8 kHz µ-law; the last frame is padded with µ-law silence."""
        if not ulaw:
            raise ValueError(f"utterance {name!r}: no audio")
        pad = (-len(ulaw)) % FRAME_BYTES
        ulaw = ulaw + bytes([ULAW_SILENCE]) * pad
        payloads = tuple(
            base64.b64encode(ulaw[i : i + FRAME_BYTES]).decode()
            for i in range(0, len(ulaw), FRAME_BYTES)
        )
        return cls(name, payloads)

    @classmethod
    def from_pcm16(cls, pcm: bytes, rate_hz: int = SAMPLE_RATE_HZ, name: str = "pcm") -> Utterance:
        """Frames from PCM16 mono audio at ``rate_hz``."""
        return cls.from_ulaw(pcm16_to_ulaw(pcm, rate_hz), name)

    @classmethod
    def from_wav(cls, path: str | Path) -> Utterance:
        """Frames from a WAV file (cached per path, so a load test encodes each file once)."""
        return _load_wav(str(resolve_audio_path(path)))

    @property
    def duration_secs(self) -> float:
        """Length of the utterance in seconds."""
        return len(self.payloads) * FRAME_SECS


@functools.lru_cache(maxsize=64)
def _load_wav(path: str) -> Utterance:
    return Utterance.from_ulaw(read_wav_as_ulaw(path), Path(path).name)


def resolve_audio_path(path: str | Path, base: Path | None = None) -> Path:
    """Find an audio file: as given, relative to ``base``, then in ``sim/assets``.

    Raises:
        FileNotFoundError: none of those exist (the message lists where it looked).
    """
    p = Path(path)
    tried = [p] + ([base / p] if base else []) + [ASSETS_DIR / p]
    for cand in tried:
        if cand.is_file():
            return cand
    raise FileNotFoundError(
        f"audio file {str(path)!r} not found; looked in: {', '.join(str(t) for t in tried)}"
    )


AudioSource = str | Path | bytes | Utterance


def as_utterance(audio: AudioSource) -> Utterance:
    """Accept a WAV path, PCM16 8 kHz bytes, or an :class:`Utterance`."""
    if isinstance(audio, Utterance):
        return audio
    if isinstance(audio, bytes | bytearray):
        return Utterance.from_pcm16(bytes(audio))
    return Utterance.from_wav(audio)


@dataclass(frozen=True)
class WaitForGreeting:
    """Wait until the bot's greeting has played and the line has been quiet for ``quiet_secs``."""

    timeout_secs: float = 10.0
    quiet_secs: float = 0.5


@dataclass(frozen=True)
class Say:
    """Speak an utterance (20 ms frames at real time); the turn ends with its last frame."""

    audio: Utterance


@dataclass(frozen=True)
class WaitForReply:
    """Wait for the bot's reply to start, finish playing, and ``quiet_secs`` of quiet after it."""

    timeout_secs: float = 10.0
    quiet_secs: float = 0.5


@dataclass(frozen=True)
class BargeIn:
    """Talk over the bot once ``after_bot_audio_secs`` of its current reply have played.

    ``timeout_secs`` bounds both the wait for bot audio and the wait for the bot to go quiet.
    """

    audio: Utterance
    after_bot_audio_secs: float = 1.0
    timeout_secs: float = 10.0


@dataclass(frozen=True)
class Listen:
    """Wait until ``secs`` have passed since the bot's current reply became audible.

    A caller who hangs up a moment into the greeting, whenever it comes: unlike a ``pause`` of a
    fixed length, the call does not end before the bot was heard on a machine slower than the
    plan's author's. The reply is the one a barge-in would talk over: the first audible bot
    audio since the caller last spoke (after ``wait_for_greeting`` with no ``say`` between,
    the greeting, so the step ends at once). ``timeout_secs`` bounds the wait for that audio to
    start (a timeline ``timeout``); once it has, the step waits out ``secs``.
    """

    secs: float = 0.5
    timeout_secs: float = 10.0


@dataclass(frozen=True)
class Dtmf:
    """Press keys: one ``dtmf`` message per digit, ``gap_secs`` apart."""

    digits: str
    gap_secs: float = 0.1


@dataclass(frozen=True)
class Pause:
    """Say nothing for ``secs`` (the line keeps sending its noise, or µ-law silence if off).

    ``until``: end the pause early once this event is set (a test holding callers on the line
    until it has checked what it needs, then letting them hang up).
    """

    secs: float
    until: asyncio.Event | None = None


@dataclass(frozen=True)
class Hangup:
    """Send ``stop`` and close the stream."""


Step = WaitForGreeting | Say | WaitForReply | BargeIn | Listen | Dtmf | Pause | Hangup


@dataclass
class CallPlan:
    """An ordered list of caller steps; build it with the chaining helpers.

    Example:
        ``CallPlan().wait_for_greeting().say("caller_question.wav").wait_for_reply().hangup()``

    Attributes:
        steps: what the caller does, in order; the caller hangs up after the last one.
        hangup_after_secs: hard limit on the call's length after the stream starts.
        silence_rms: RMS threshold separating silent from non-silent bot audio.
        gap_min_secs: playback underruns shorter than this are not counted as gaps.
        reply_break_secs: bot audio resuming after a quiet spell this long is a new reply.
        line_noise: what the line adds to the caller's audio (noise, echo); by default the
            realistic line of :data:`sim.caller.line_noise.DEFAULT_LINE_NOISE_DBFS`.
        playout_delay_secs: Twilio's buffering before received audio plays; latencies are
            measured to when the caller hears the audio.
        stream_connect_secs: how long after reading the TwiML the stream opens (Twilio's
            connect; :data:`DEFAULT_STREAM_CONNECT_SECS`).
    """

    steps: list[Step] = field(default_factory=list)
    hangup_after_secs: float = 120.0
    silence_rms: float = DEFAULT_SILENCE_RMS
    gap_min_secs: float = 0.02
    reply_break_secs: float = 2.0
    line_noise: LineNoise = field(default_factory=LineNoise)
    playout_delay_secs: float = DEFAULT_PLAYOUT_DELAY_SECS
    stream_connect_secs: float = DEFAULT_STREAM_CONNECT_SECS

    def wait_for_greeting(self, timeout_secs: float = 10.0, quiet_secs: float = 0.5) -> CallPlan:
        """Append a :class:`WaitForGreeting` step."""
        self.steps.append(WaitForGreeting(timeout_secs, quiet_secs))
        return self

    def say(self, audio: AudioSource) -> CallPlan:
        """Append a :class:`Say` step (WAV path, PCM16 8 kHz bytes, or Utterance)."""
        self.steps.append(Say(as_utterance(audio)))
        return self

    def wait_for_reply(self, timeout_secs: float = 10.0, quiet_secs: float = 0.5) -> CallPlan:
        """Append a :class:`WaitForReply` step."""
        self.steps.append(WaitForReply(timeout_secs, quiet_secs))
        return self

    def barge_in(
        self,
        after_bot_audio_secs: float = 1.0,
        audio: AudioSource = "caller_bargein.wav",
        timeout_secs: float = 10.0,
    ) -> CallPlan:
        """Append a :class:`BargeIn` step."""
        self.steps.append(BargeIn(as_utterance(audio), after_bot_audio_secs, timeout_secs))
        return self

    def dtmf(self, digits: str, gap_secs: float = 0.1) -> CallPlan:
        """Append a :class:`Dtmf` step."""
        self.steps.append(Dtmf(digits, gap_secs))
        return self

    def listen(self, secs: float = 0.5, timeout_secs: float = 10.0) -> CallPlan:
        """Append a :class:`Listen` step."""
        self.steps.append(Listen(secs, timeout_secs))
        return self

    def pause(self, secs: float, until: asyncio.Event | None = None) -> CallPlan:
        """Append a :class:`Pause` step."""
        self.steps.append(Pause(secs, until))
        return self

    def hangup(self) -> CallPlan:
        """Append a :class:`Hangup` step (steps after it never run)."""
        self.steps.append(Hangup())
        return self

    @classmethod
    def default(cls) -> CallPlan:
        """Greeting, one question, the reply, hang up."""
        return cls().wait_for_greeting().say("caller_question.wav").wait_for_reply().hangup()
