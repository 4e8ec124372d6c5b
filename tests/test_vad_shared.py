"""The shared, gated Silero VAD decides like Pipecat's per-call ``SileroVADAnalyzer``."""

from __future__ import annotations

import audioop
from pathlib import Path

import numpy as np
import pytest
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams, VADState

from pipelines.audio.vad import SharedSileroVADAnalyzer

pytestmark = pytest.mark.unit

ASSETS = Path(__file__).resolve().parent.parent / "sim" / "assets"
RATE = 16000
CHUNK = RATE * 40 // 1000 * 2  # 40 ms of 16-bit PCM


def _ulaw_wav_pcm16k(name: str) -> bytes:
    """Decode a mu-law WAV from sim/assets to 16 kHz PCM (sample-doubling is enough here)."""
    raw = (ASSETS / name).read_bytes()
    data = raw[raw.index(b"data") + 8 :]
    pcm8 = audioop.ulaw2lin(data, 2)
    pcm16, _ = audioop.ratecv(pcm8, 2, 1, 8000, RATE, None)
    return pcm16


def _stream(noise_rms: float) -> bytes:
    """Silence, speech, a pause, speech, silence; with optional line noise."""
    q = _ulaw_wav_pcm16k("caller_question.wav")
    b = _ulaw_wav_pcm16k("caller_bargein.wav")
    gap = bytes(RATE * 2)  # 1 s
    pcm = np.frombuffer(gap + q + gap + gap + b + gap, dtype=np.int16).astype(np.float64)
    rng = np.random.default_rng(7)
    pcm += rng.normal(0.0, noise_rms, len(pcm))
    return np.clip(pcm, -32768, 32767).astype(np.int16).tobytes()


def _segments(states: list[VADState]) -> list[tuple[int, int]]:
    """(first, last) chunk index of each SPEAKING run."""
    out: list[tuple[int, int]] = []
    start = None
    for i, s in enumerate([*states, VADState.QUIET]):
        if s == VADState.SPEAKING and start is None:
            start = i
        elif s != VADState.SPEAKING and start is not None:
            out.append((start, i - 1))
            start = None
    return out


async def _states(vad, audio: bytes) -> list[VADState]:
    vad.set_sample_rate(RATE)
    out = []
    for i in range(0, len(audio) - CHUNK + 1, CHUNK):
        out.append(await vad.analyze_audio(audio[i : i + CHUNK]))
    await vad.cleanup()
    return out


@pytest.mark.parametrize("noise_rms", [0.0, 3.0])
async def test_gated_shared_vad_matches_pipecat(noise_rms: float) -> None:
    params = VADParams()
    audio = _stream(noise_rms)
    reference = await _states(SileroVADAnalyzer(params=params), audio)
    shared = SharedSileroVADAnalyzer(params=params)
    gated = await _states(shared, audio)
    assert VADState.SPEAKING in reference, "the test audio must contain detected speech"
    ref, new = _segments(reference), _segments(gated)
    assert len(ref) == len(new) >= 2, (ref, new)
    for (rs, re), (ns, ne) in zip(ref, new, strict=True):
        # Onsets may come up to 2 chunks (80 ms) sooner: the model state skipped the silence.
        assert 0 <= rs - ns <= 2, (ref, new)
        assert re == ne, (ref, new)
    # The gate did its job: most windows (the silences) never reached the model.
    assert shared.windows_skipped > shared.windows * 0.25, (shared.windows_skipped, shared.windows)


async def test_ungated_shared_vad_is_identical() -> None:
    audio = _stream(0.0)
    reference = await _states(SileroVADAnalyzer(), audio)
    shared = SharedSileroVADAnalyzer(gate=False)
    assert await _states(shared, audio) == reference
    assert shared.windows_skipped == 0


async def test_speech_is_never_skipped() -> None:
    """Loud audio always reaches the model, whatever came before."""
    vad = SharedSileroVADAnalyzer()
    audio = bytes(RATE * 2) + _ulaw_wav_pcm16k("caller_question.wav")
    await _states(vad, audio)
    silent_windows = RATE * 2 // 512
    assert vad.windows_skipped <= silent_windows


async def test_a_new_stream_of_silence_never_reaches_the_model() -> None:
    """A call starts quiet: its first windows of silence skip the model (cheap call setup)."""
    vad = SharedSileroVADAnalyzer()
    states = await _states(vad, bytes(RATE))  # one second of silence
    assert set(states) == {VADState.QUIET}
    assert vad.windows > 0 and vad.windows_skipped == vad.windows
