"""The caller audio route: transport input -> greeting grace -> local VAD -> 8k -> 16k -> model.

Caller audio does not travel the Pipecat pipeline (about seven queue-and-task hops a frame,
most of a call's CPU, for processors that do not use it). The transport input hands every
batched 8 kHz frame (40 ms) to ``CallerAudioRoute``, in its receive task, which in order:

1. **Greeting grace** (``CallControl.in_greeting_grace``): the audio becomes silence, so echo
   or a caller's "hello?" neither triggers barge-in nor reaches the model.
2. **Local VAD** on the caller's own 8 kHz audio: the call's ``VADStream`` of the process-wide
   ``BatchedSileroVAD`` (``pipelines.audio.batched_vad``). Its decisions come back at the next
   batching tick (<= 16 ms) and leave here as Pipecat's public VAD frames, pushed down the
   pipeline from the transport input as a transport with a VAD analyzer pushes them:
   ``VADUserStartedSpeakingFrame(start_secs)`` / ``VADUserStoppedSpeakingFrame(stop_secs)``,
   and ``SpeechControlParamsFrame(vad_params)`` once at start (Gemini's service sizes its
   audio pre-roll from it). The user aggregator's ``VADUserTurnStartStrategy`` and
   ``SpeechTimeoutUserTurnStopStrategy`` turn them into ``User*SpeakingFrame``s and the
   interruption, and its mute strategies (none configured) would apply to them.
3. **8 kHz -> 16 kHz** with the streaming FIR resampler (one call per 40 ms batch).
4. **The model**: ``CallGeminiLive.caller_audio`` (audio-stream-end timer, pre-roll, send).

``UserSpeakingFrame`` (Pipecat's every-200-ms "still speaking") is not pushed: nothing in this
pipeline uses it (the worker's idle timeout is off), and it would cost a pipeline trip each.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from loguru import logger
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    SpeechControlParamsFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)

from pipelines.audio.batched_vad import BatchedSileroVAD, VADStream
from pipelines.audio.resampling import FirStreamResampler
from pipelines.audio.speech_turns import SAMPLE_RATE_HZ as VAD_RATE_HZ

if TYPE_CHECKING:
    from pipelines.call.control import CallControl
    from pipelines.gemini.service import CallGeminiLive

PushFrame = Callable[[Frame], Awaitable[None]]


class CallerAudioRoute:
    """One call's caller audio route (see the module docstring).

    Args:
        control: The call's control (greeting grace).
        llm: The call's Gemini service.
        model_rate_hz: The rate the model gets (16 kHz).
        vad: The process's batched detector; None: no local VAD.
        vad_params: The call's VAD thresholds; None: no local VAD.
    """

    def __init__(
        self,
        control: CallControl,
        llm: CallGeminiLive,
        *,
        model_rate_hz: int,
        vad: BatchedSileroVAD | None = None,
        vad_params: VADParams | None = None,
    ) -> None:
        """Create the route; ``start()`` opens its VAD stream."""
        self._control = control
        self._llm = llm
        self._rate = model_rate_hz
        self._vad = vad if vad_params is not None else None
        self._vad_params = vad_params
        self._stream: VADStream | None = None
        self._resampler = FirStreamResampler()
        self._push: PushFrame | None = None
        self._events: deque[Frame] = deque()
        self._pusher: asyncio.Task[None] | None = None
        self._failed = False
        self._warned_rate = False
        # Clear while the local VAD hears the caller speak (set without local VAD): what the
        # caller types meanwhile waits for them to finish (pipelines.call.dtmf).
        self.caller_quiet = asyncio.Event()
        self.caller_quiet.set()

    @property
    def vad_stream(self) -> VADStream | None:
        """The call's VAD stream while the route runs (None without local VAD)."""
        return self._stream

    async def start(self, push: PushFrame) -> None:
        """Open the VAD stream; speech frames go out through ``push`` (downstream)."""
        self._push = push
        if self._vad is not None and self._vad_params is not None and self._stream is None:
            self._stream = self._vad.open(self._vad_params, self._on_speech)
            await push(SpeechControlParamsFrame(vad_params=self._vad_params))

    async def stop(self) -> None:
        """Close the VAD stream and drop undelivered speech frames (idempotent)."""
        self.caller_quiet.set()
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        self._events.clear()
        pusher, self._pusher = self._pusher, None
        if pusher is not None and not pusher.done() and pusher is not asyncio.current_task():
            pusher.cancel()
            try:
                await pusher
            except asyncio.CancelledError:
                if (current := asyncio.current_task()) is not None and current.cancelling():
                    raise

    async def __call__(self, frame: InputAudioRawFrame) -> None:
        """Route one batch of caller audio; errors are logged (once per call), never raised."""
        try:
            audio = frame.audio
            if self._control.in_greeting_grace():
                audio = bytes(len(audio))
            rate = frame.sample_rate
            if self._stream is not None:
                if rate == VAD_RATE_HZ and frame.num_channels == 1:
                    self._stream.feed(audio)
                elif not self._warned_rate:
                    self._warned_rate = True
                    logger.warning(
                        f"local VAD: caller audio at {rate} Hz x{frame.num_channels}, expected "
                        f"{VAD_RATE_HZ} Hz mono (the Twilio serializer's input_rate); no local "
                        "barge-in on this call"
                    )
            if rate != self._rate and frame.num_channels == 1:
                audio = await self._resampler.resample(audio, rate, self._rate)
                rate = self._rate
            out = InputAudioRawFrame(audio=audio, sample_rate=rate, num_channels=frame.num_channels)
            out.metadata.update(frame.metadata)
            await self._llm.caller_audio(out)
        except Exception as e:
            # As in a Pipecat processor, one bad frame does not end the call.
            if not self._failed:
                self._failed = True
                logger.exception(f"caller audio route failed: {e.__class__.__name__}")

    def _on_speech(self, speaking: bool) -> None:
        """From the detector's tick: queue the VAD frame and make sure it is pushed."""
        params = self._vad_params
        if params is None or self._push is None:
            return
        if speaking:
            self.caller_quiet.clear()
            self._events.append(VADUserStartedSpeakingFrame(start_secs=params.start_secs))
        else:
            self.caller_quiet.set()
            self._events.append(VADUserStoppedSpeakingFrame(stop_secs=params.stop_secs))
        if self._pusher is None or self._pusher.done():
            self._pusher = asyncio.get_running_loop().create_task(
                self._push_events(), name="caller-audio:vad-frames"
            )

    async def _push_events(self) -> None:
        """Push queued speech frames in order (one task at a time per call)."""
        push = self._push
        while self._events and push is not None:
            try:
                await push(self._events.popleft())
            except Exception as e:
                logger.exception(f"pushing a VAD frame failed: {e.__class__.__name__}")
