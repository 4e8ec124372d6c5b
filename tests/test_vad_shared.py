"""The process-wide batched Silero detector keeps every call's model state its own."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from pipecat.audio.vad.silero import SileroOnnxModel
from pipecat.audio.vad.vad_analyzer import VADParams, VADState

from pipelines.audio.batched_vad import WINDOW_BYTES, BatchedSileroVAD
from pipelines.audio.speech_turns import SpeechTurns
from tests.vad_audio import CHUNK_BYTES, chunks, conversation, line_noise, speech_pcm

pytestmark = pytest.mark.unit

PARAMS = VADParams(confidence=0.7, start_secs=0.3, stop_secs=0.8, min_volume=0.6)


def _model_path() -> str:
    from importlib import resources

    return str(resources.files("pipecat.audio.vad.data").joinpath("silero_vad.onnx"))


def _alone(pcm: bytes) -> tuple[list[float], list[VADState]]:
    """One call run alone through Pipecat's public ``SileroOnnxModel``, window by window."""
    model = SileroOnnxModel(_model_path())
    turns = SpeechTurns(PARAMS)
    confidences, states = [], []
    for i in range(0, len(pcm) - WINDOW_BYTES + 1, WINDOW_BYTES):
        x = np.frombuffer(pcm[i : i + WINDOW_BYTES], np.int16).astype(np.float32) / 32768.0
        conf = float(model(x, 8000)[0][0])
        e = np.square(x).reshape(2, -1).sum(axis=1).tolist()
        if turns.window(conf, e[0], e[1]):
            model.reset_states()
        confidences.append(conf)
        states.append(turns.state)
    return confidences, states


async def _batched(
    detector: BatchedSileroVAD, calls: list[bytes]
) -> list[tuple[list[float], list[VADState]]]:
    """All calls through one detector, fed 40 ms at a time, stepped one batch at a time."""
    streams = [detector.open(PARAMS, lambda _s: None) for _ in calls]
    out: list[tuple[list[float], list[VADState]]] = [([], []) for _ in calls]
    cut = [chunks(pcm) for pcm in calls]
    for k in range(max(len(c) for c in cut)):
        for stream, c in zip(streams, cut, strict=True):
            if k < len(c):
                stream.feed(c[k])
        while any(s.pending for s in streams):
            before = [len(s.pending) for s in streams]
            await detector.run_pending(rounds=1)
            for i, s in enumerate(streams):
                if len(s.pending) < before[i]:
                    out[i][0].append(s.turns.confidence)
                    out[i][1].append(s.turns.state)
    for s in streams:
        s.close()
    return out


@pytest.fixture
async def detector():
    det = BatchedSileroVAD(tick_secs=3600.0)  # stepped by hand
    yield det
    await det.stop()


def _calls() -> list[bytes]:
    """Four different callers: talking, on noise, talking late, on a quiet line."""
    speech = conversation(-50.0)
    return [
        speech,
        line_noise(-44.0, len(speech)),
        bytes(8000 * 2 * 3) + speech[: -8000 * 2 * 3],
        conversation(-60.0),
    ]


@pytest.mark.parametrize("inline_max", [0, 1000], ids=["worker-thread", "inline"])
async def test_each_call_in_a_batch_scores_as_if_alone(inline_max: int) -> None:
    detector = BatchedSileroVAD(tick_secs=3600.0, inline_max_windows=inline_max)
    calls = _calls()
    batched = await _batched(detector, calls)
    for pcm, (conf, states) in zip(calls, batched, strict=True):
        ref_conf, ref_states = _alone(pcm)
        assert len(conf) == len(ref_conf) > 600
        assert np.allclose(conf, ref_conf, atol=1e-4), max(
            abs(a - b) for a, b in zip(conf, ref_conf, strict=True)
        )
        assert states == ref_states
    assert VADState.SPEAKING in batched[0][1] and VADState.SPEAKING not in batched[1][1]
    # Batched for real: four calls' windows per model run, not one.
    assert detector.windows == sum(len(c) for c, _ in batched)
    assert detector.batches <= detector.windows / 3
    assert detector.inference_secs > 0 and detector.loop_secs > 0
    await detector.stop()


async def test_a_slot_freed_during_a_batch_is_clean_for_the_next_call() -> None:
    detector = BatchedSileroVAD(tick_secs=3600.0, inline_max_windows=0)
    speech = speech_pcm("caller_question.wav")
    old = detector.open(PARAMS, lambda _s: None)
    old.feed(speech[: WINDOW_BYTES * 8])
    await detector.run_pending(rounds=4)  # the old call has model state now
    old.feed(speech[WINDOW_BYTES * 8 : WINDOW_BYTES * 9])
    running = asyncio.ensure_future(detector.run_pending())
    await asyncio.sleep(0)  # the batch is in the worker thread
    old.close()
    new = detector.open(PARAMS, lambda _s: None)
    assert new.slot == old.slot  # reused at once
    await running
    window = speech[WINDOW_BYTES * 20 : WINDOW_BYTES * 21]
    new.feed(window)
    await detector.run_pending()
    fresh = SileroOnnxModel(_model_path())
    x = np.frombuffer(window, np.int16).astype(np.float32) / 32768.0
    assert new.turns.confidence == pytest.approx(float(fresh(x, 8000)[0][0]), abs=1e-5)
    new.close()
    await detector.stop()


async def test_slots_grow_past_the_first_allocation(detector: BatchedSileroVAD) -> None:
    streams = [detector.open(PARAMS, lambda _s: None) for _ in range(150)]
    assert len({s.slot for s in streams}) == 150 and detector.streams == 150
    for s in streams:
        s.feed(line_noise(-50.0, CHUNK_BYTES * 2))
    await detector.run_pending()
    assert detector.windows == 150 * 2 and detector.batches == 2
    for s in streams:
        s.close()
    assert detector.streams == 0


async def test_the_tick_runs_while_calls_are_up_and_stops_when_idle() -> None:
    detector = BatchedSileroVAD(tick_secs=0.005)
    await asyncio.to_thread(detector.load)
    changes: list[bool] = []
    stream = detector.open(PARAMS, changes.append)
    assert detector.running
    speech = bytes(8000) + speech_pcm("caller_bargein.wav") + bytes(8000 * 2 * 2)
    for chunk in chunks(speech):  # faster than real time: the tick keeps up in rounds
        stream.feed(chunk)
        await asyncio.sleep(0.004)
    for _ in range(200):
        if not stream.pending:
            break
        await asyncio.sleep(0.01)
    assert changes == [True, False]
    stream.close()
    await asyncio.sleep(0.05)
    assert detector.streams == 0
    assert not detector.running  # idle: no tick task left
    await detector.stop()


async def test_feeding_after_close_does_nothing(detector: BatchedSileroVAD) -> None:
    stream = detector.open(PARAMS, lambda _s: None)
    stream.close()
    stream.close()
    stream.feed(bytes(CHUNK_BYTES))
    await detector.run_pending()
    assert detector.windows == 0 and detector.streams == 0
