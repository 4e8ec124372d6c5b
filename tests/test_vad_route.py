"""The caller audio route: grace, 8 kHz VAD, 16 kHz to the model, VAD frames into the pipeline.

The route runs with the real batched detector and model; the call's control and Gemini service
are stood in for by the two methods the route calls (greeting grace, ``caller_audio``). The
last test feeds the route's frames to Pipecat's own user aggregator, configured as the call
pipeline configures it (no VAD analyzer of its own), to show the turns and the interruption
come out of the public turn strategies.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    SpeechControlParamsFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.tests.utils import SleepFrame, run_test
from pipecat.turns.user_start import VADUserTurnStartStrategy
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies

from pipelines.audio.batched_vad import TICK_SECS, BatchedSileroVAD
from pipelines.call.caller_audio import CallerAudioRoute
from pipelines.frame_metadata import RX_EACH_KEY, RX_KEY
from tests.test_vad_shared import PARAMS
from tests.vad_audio import chunks, conversation, speech_pcm

pytestmark = [pytest.mark.unit, pytest.mark.timed]  # real timers: runs with the calls


class _Control:
    def __init__(self, grace: bool = False) -> None:
        self.grace = grace

    def in_greeting_grace(self) -> bool:
        return self.grace


class _Model:
    def __init__(self) -> None:
        self.frames: list[InputAudioRawFrame] = []

    async def caller_audio(self, frame: InputAudioRawFrame) -> None:
        self.frames.append(frame)


def _route(detector: BatchedSileroVAD, control: Any, model: Any) -> CallerAudioRoute:
    return CallerAudioRoute(control, model, model_rate_hz=16000, vad=detector, vad_params=PARAMS)


async def _feed(route: CallerAudioRoute, detector: BatchedSileroVAD, pcm: bytes) -> None:
    for k, chunk in enumerate(chunks(pcm)):
        frame = InputAudioRawFrame(audio=chunk, sample_rate=8000, num_channels=1)
        frame.metadata[RX_KEY] = float(k)
        frame.metadata[RX_EACH_KEY] = (float(k), k + 0.5)
        await route(frame)
        await detector.run_pending()
        await asyncio.sleep(0)  # the route's pusher task


@pytest.fixture
async def detector():
    det = BatchedSileroVAD(tick_secs=3600.0)  # stepped by hand
    yield det
    await det.stop()


async def test_speech_leaves_as_vad_frames_and_audio_reaches_the_model_at_16k(
    detector: BatchedSileroVAD,
) -> None:
    pushed: list[Frame] = []
    model = _Model()
    route = _route(detector, _Control(), model)

    async def push(frame: Frame) -> None:
        pushed.append(frame)

    await route.start(push)
    pcm = conversation(-50.0)
    await _feed(route, detector, pcm)
    await route.stop()
    assert detector.streams == 0
    assert isinstance(pushed[0], SpeechControlParamsFrame) and pushed[0].vad_params == PARAMS
    kinds = [type(f) for f in pushed[1:]]
    assert kinds == [VADUserStartedSpeakingFrame, VADUserStoppedSpeakingFrame] * 3, kinds
    assert all(f.start_secs == 0.3 for f in pushed if isinstance(f, VADUserStartedSpeakingFrame))
    assert all(f.stop_secs == 0.8 for f in pushed if isinstance(f, VADUserStoppedSpeakingFrame))
    # Every batch reached the model, upsampled once, stamped as it arrived.
    assert len(model.frames) == len(chunks(pcm))
    assert {f.sample_rate for f in model.frames} == {16000}
    assert sum(len(f.audio) for f in model.frames) == 2 * len(chunks(pcm)) * 640
    assert model.frames[7].metadata[RX_KEY] == 7.0
    assert model.frames[7].metadata[RX_EACH_KEY] == (7.0, 7.5)


async def test_greeting_grace_hides_speech_from_vad_and_model(detector: BatchedSileroVAD) -> None:
    pushed: list[Frame] = []
    model = _Model()
    route = _route(detector, _Control(grace=True), model)

    async def push(frame: Frame) -> None:
        pushed.append(frame)

    await route.start(push)
    await _feed(route, detector, conversation(-44.0)[: 8000 * 2 * 6])
    await route.stop()
    assert [type(f) for f in pushed] == [SpeechControlParamsFrame]
    assert model.frames and all(not any(f.audio) for f in model.frames)


async def test_without_local_vad_audio_still_reaches_the_model(detector: BatchedSileroVAD) -> None:
    pushed: list[Frame] = []
    model = _Model()
    route = CallerAudioRoute(_Control(), model, model_rate_hz=16000, vad=detector, vad_params=None)  # type: ignore[arg-type]

    async def push(frame: Frame) -> None:
        pushed.append(frame)

    await route.start(push)
    await _feed(route, detector, speech_pcm("caller_bargein.wav"))
    await route.stop()
    assert pushed == [] and detector.streams == 0 and len(model.frames) > 20


async def test_barge_in_is_decided_within_one_tick_of_the_audio() -> None:
    """Real time, real tick: the start frame leaves <= one tick after the deciding audio."""
    stepped = BatchedSileroVAD(tick_secs=3600.0)
    # Which 40 ms batch completes the speech start (the detector decides per window).
    decided: list[int] = []
    route = _route(stepped, _Control(), _Model())
    k = 0

    async def mark(frame: Frame) -> None:
        if isinstance(frame, VADUserStartedSpeakingFrame):
            decided.append(k)

    await route.start(mark)
    pcm = bytes(8000 * 2) + speech_pcm("caller_bargein.wav")
    for k, chunk in enumerate(chunks(pcm)):  # noqa: B007 (read by mark)
        await route(InputAudioRawFrame(audio=chunk, sample_rate=8000, num_channels=1))
        await stepped.run_pending()
        await asyncio.sleep(0)
    await route.stop()
    await stepped.stop()
    assert decided, "the utterance must start speech"

    live = BatchedSileroVAD()  # the default tick
    await asyncio.to_thread(live.load)
    sent_at: dict[int, float] = {}
    started: list[float] = []

    async def record(frame: Frame) -> None:
        if isinstance(frame, VADUserStartedSpeakingFrame):
            started.append(time.monotonic())

    route = _route(live, _Control(), _Model())
    await route.start(record)
    for k, chunk in enumerate(chunks(pcm)):
        sent_at[k] = time.monotonic()
        await route(InputAudioRawFrame(audio=chunk, sample_rate=8000, num_channels=1))
        if started:
            break
        await asyncio.sleep(0.04)
    await asyncio.sleep(3 * TICK_SECS)
    await route.stop()
    await live.stop()
    assert started, "no speech start from the live detector"
    delay = started[0] - sent_at[decided[0]]
    # One tick, plus scheduling slack on a shared test machine.
    assert delay <= TICK_SECS + 0.03, f"{delay * 1000:.1f} ms after the deciding audio"


async def test_the_user_aggregator_turns_vad_frames_into_turns_and_interruptions() -> None:
    user, _assistant = LLMContextAggregatorPair(
        LLMContext(),
        realtime_service_mode=True,
        user_params=LLMUserAggregatorParams(
            user_turn_strategies=UserTurnStrategies(
                start=[VADUserTurnStartStrategy()],
                stop=[SpeechTimeoutUserTurnStopStrategy(wait_for_transcript=False)],
            ),
        ),
    )
    down, _up = await run_test(
        user,
        frames_to_send=[
            SpeechControlParamsFrame(vad_params=PARAMS),
            VADUserStartedSpeakingFrame(start_secs=0.3),
            VADUserStoppedSpeakingFrame(stop_secs=0.8),
            SleepFrame(sleep=0.8),  # the stop strategy's 0.6 s user_speech_timeout
        ],
    )
    kinds = [type(f) for f in down]
    assert UserStartedSpeakingFrame in kinds and InterruptionFrame in kinds, kinds
    assert UserStoppedSpeakingFrame in kinds, kinds
    assert kinds.index(UserStartedSpeakingFrame) < kinds.index(UserStoppedSpeakingFrame)
