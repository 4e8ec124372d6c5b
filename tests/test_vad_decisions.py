"""The batched 8 kHz VAD decides like Pipecat's own ``SileroVADAnalyzer`` did at 16 kHz.

Reference: Pipecat's ``SileroVADAnalyzer``, unmodified, at 16 kHz on the caller audio upsampled
with the server's resampler, in 40 ms chunks (what the server ran before). Ours: the batched
detector on the same caller audio at 8 kHz, in the same chunks. Cases: a conversation (three
utterances) with each shipped persona's thresholds, and each bundled caller utterance alone,
on pink line noise at -60, -50 and -44 dBFS.

Tolerance, over all cases together:

* the same number of speech segments in every case, and every stop within 80 ms (two chunks);
* at least 85 % of the starts within 80 ms;
* the others: ours at most ``start_secs`` + 80 ms later than Pipecat's (one window of one
  model dipping under the confidence threshold inside a word restarts the start count), and
  at most 1 s earlier (Pipecat's 16 kHz model, its state drifted by quiet, is late), and no
  more than 5 % of the starts later by over 80 ms.

Measured (42 segments): 38 starts within 40 ms, three 0.68-0.96 s earlier than Pipecat's
(the 16 kHz model late on the long answer at -60/-50 dBFS), one 0.44 s later (start_secs 0.4,
the 8 kHz model's one dip to 0.64 inside "excuse me"); every stop within 80 ms. 8 kHz and
16 kHz are different Silero models, so decisions cannot be identical. Not compared: digital
silence between the words, where the 16 kHz model detects the long answer 0.8 s late.
On line noise alone neither detects anything.
"""

from __future__ import annotations

import numpy as np
import pytest
from pipecat.audio.utils import calculate_audio_volume
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams, VADState

from pipelines.audio.batched_vad import BatchedSileroVAD
from pipelines.audio.resampling import FirStreamResampler
from pipelines.audio.speech_turns import volume_of
from tests.vad_audio import CHUNK_BYTES, chunks, conversation, line_noise, mixed, speech_pcm

pytestmark = [pytest.mark.unit, pytest.mark.cpu_heavy]

TOLERANCE_SECS = 0.08
CHUNK_SECS = 0.04
# The shipped personas' thresholds (schema defaults, appointments, soporte_es): start_secs is
# max(start_secs, min_speech_ms), as the pipeline builds them.
PARAMS = {
    "default": VADParams(confidence=0.7, start_secs=0.3, stop_secs=0.8, min_volume=0.6),
    "appointments": VADParams(confidence=0.75, start_secs=0.3, stop_secs=0.8, min_volume=0.6),
    "soporte_es": VADParams(confidence=0.7, start_secs=0.4, stop_secs=0.8, min_volume=0.6),
}
Segments = list[tuple[float, float | None]]


async def _pipecat_segments(pcm8: bytes, params: VADParams) -> Segments:
    """Speech segments (start, stop) in seconds of audio, as Pipecat's VAD controller sees them."""
    pcm16 = await FirStreamResampler().resample(pcm8, 8000, 16000)
    vad = SileroVADAnalyzer(params=params)
    vad.set_sample_rate(16000)
    out: list[list[float | None]] = []
    speaking = False
    size = 2 * CHUNK_BYTES  # 40 ms at 16 kHz
    for k in range(len(pcm16) // size):
        state = await vad.analyze_audio(pcm16[k * size : (k + 1) * size])
        t = (k + 1) * CHUNK_SECS
        if state == VADState.SPEAKING and not speaking:
            speaking = True
            out.append([t, None])
        elif state == VADState.QUIET and speaking:
            speaking = False
            out[-1][1] = t
    await vad.cleanup()
    return [(s[0], s[1]) for s in out]  # type: ignore[misc]


async def _our_segments(pcm8: bytes, params: VADParams, detector: BatchedSileroVAD) -> Segments:
    out: list[list[float | None]] = []
    now = 0.0

    def on_change(speaking: bool) -> None:
        if speaking:
            out.append([now, None])
        else:
            out[-1][1] = now

    stream = detector.open(params, on_change)
    for k, chunk in enumerate(chunks(pcm8)):
        now = (k + 1) * CHUNK_SECS
        stream.feed(chunk)
        await detector.run_pending()
    stream.close()
    return [(s[0], s[1]) for s in out]  # type: ignore[misc]


def _assert_close(ref: Segments, ours: Segments) -> None:
    assert len(ours) == len(ref), f"segments: Pipecat {ref}, ours {ours}"
    for (rs, re), (os_, oe) in zip(ref, ours, strict=True):
        assert abs(rs - os_) <= TOLERANCE_SECS + 1e-9, f"start: Pipecat {ref}, ours {ours}"
        assert (re is None) == (oe is None), f"stop: Pipecat {ref}, ours {ours}"
        if re is not None and oe is not None:
            assert abs(re - oe) <= TOLERANCE_SECS + 1e-9, f"stop: Pipecat {ref}, ours {ours}"


@pytest.fixture
async def detector():
    det = BatchedSileroVAD(tick_secs=3600.0)  # stepped by hand with run_pending()
    yield det
    await det.stop()


UTTERANCES = ("caller_hello.wav", "caller_question.wav", "caller_bargein.wav")
UTTERANCES += ("caller_goodbye.wav", "caller_long.wav")
LEVELS = (-60.0, -50.0, -44.0)


def _cases() -> list[tuple[str, bytes, VADParams]]:
    gap = bytes(8000 * 2)
    cases = []
    for level in LEVELS:
        for persona, params in sorted(PARAMS.items()):
            cases.append((f"conversation {persona} {level:g} dBFS", conversation(level), params))
        for name in UTTERANCES:
            pcm = gap + speech_pcm(name) + gap
            noisy = mixed(pcm, line_noise(level, len(pcm)))
            cases.append((f"{name} {level:g} dBFS", noisy, PARAMS["soporte_es"]))
    return cases


async def test_speech_on_a_noisy_line_matches_pipecat(detector: BatchedSileroVAD) -> None:
    starts: list[tuple[str, float, float]] = []  # (case, ours - Pipecat's, start_secs)
    for label, pcm, params in _cases():
        ref = await _pipecat_segments(pcm, params)
        ours = await _our_segments(pcm, params, detector)
        assert ref, f"{label}: the test audio must hold detected speech"
        assert len(ours) == len(ref), f"{label}: segments: Pipecat {ref}, ours {ours}"
        for (rs, re), (os_, oe) in zip(ref, ours, strict=True):
            assert (re is None) == (oe is None), f"{label}: stop: Pipecat {ref}, ours {ours}"
            if re is not None and oe is not None:
                assert abs(oe - re) <= TOLERANCE_SECS + 1e-9, (
                    f"{label}: stop: Pipecat {ref}, ours {ours}"
                )
            starts.append((label, os_ - rs, params.start_secs))
    near = [d for _, d, _ in starts if abs(d) <= TOLERANCE_SECS + 1e-9]
    later = [(c, round(d, 2)) for c, d, _ in starts if d > TOLERANCE_SECS + 1e-9]
    far = [
        (c, round(d, 2))
        for c, d, start_secs in starts
        if d > start_secs + TOLERANCE_SECS + 1e-9 or d < -1.0 - 1e-9
    ]
    summary = f"{len(near)}/{len(starts)} starts within 80 ms; later: {later}; beyond: {far}"
    assert len(near) >= 0.85 * len(starts), summary
    assert not far, summary
    assert len(later) <= 0.05 * len(starts), summary


@pytest.mark.parametrize("dbfs", [-60.0, -50.0, -44.0])
async def test_line_noise_alone_is_never_speech(detector: BatchedSileroVAD, dbfs: float) -> None:
    pcm = line_noise(dbfs, 8000 * 2 * 20)
    params = PARAMS["default"]
    ref = await _pipecat_segments(pcm, params)
    ours = await _our_segments(pcm, params, detector)
    assert ref == ours == [], (ref, ours)


@pytest.mark.parametrize("source", ["caller_long.wav", "noise -60", "noise -50", "noise -44"])
async def test_cheap_volume_is_within_a_decibel_of_bs1770(source: str) -> None:
    """Plain energy on 8 kHz against Pipecat's BS.1770 on the 16 kHz audio the server had."""
    if source.startswith("noise"):
        pcm8 = line_noise(float(source.split()[1]), 8000 * 2 * 8)
    else:
        pcm8 = speech_pcm(source)
    pcm16 = await FirStreamResampler().resample(pcm8, 8000, 16000)
    diffs = []
    for i in range(0, len(pcm8) // 2 - 3200, 1600):  # 400 ms blocks, 200 ms apart
        x = np.frombuffer(pcm8[2 * i : 2 * i + 6400], np.int16).astype(np.float64) / 32768
        reference = calculate_audio_volume(pcm16[4 * i : 4 * i + 12800], 16000)
        if reference > 0.4:  # above the absolute gate
            diffs.append(volume_of(float(np.mean(x * x))) - reference)
    assert len(diffs) >= 10
    # 0.01 on the 0..1 volume scale is 1 dB.
    assert max(abs(d) for d in diffs) <= 0.01, (min(diffs), max(diffs))
