"""Caller audio off the Pipecat pipeline: transport input -> local VAD -> the model.

Each 40 ms frame of caller audio used to travel the whole pipeline (input transport, call tap,
user aggregator, Gemini service, output transport, tap, assistant aggregator): about seven
queue-and-task hops per frame, most of the per-call CPU. No processor after the Gemini service
uses caller audio, and the user aggregator only hands it to its VAD controller, so the
transport input calls ``CallerAudioPath`` instead, in its receive task:

1. Greeting grace: the audio is replaced by silence, so echo or a caller's "hello?" neither
   triggers barge-in nor reaches the model.
2. Local VAD: the user aggregator's own ``VADController``. Its speech events are queued into the
   aggregator exactly as before, so turn starts, interruptions and ``User*SpeakingFrame``s
   still flow through the pipeline in order.
3. The model: ``CallGeminiLive.caller_audio`` (audio-stream-end timer, pre-roll, send).

Only control frames travel the pipeline now.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loguru import logger
from pipecat.frames.frames import InputAudioRawFrame

if TYPE_CHECKING:
    from pipelines.call.control import CallControl
    from pipelines.gemini.service import CallGeminiLive


class CallerAudioPath:
    """The per-call sink for caller audio frames (see the module docstring).

    Args:
        control: The call's control (greeting grace).
        user_aggregator: The user context aggregator; its VAD controller (Pipecat's private
            ``_vad_controller``, None without local VAD) analyzes the audio.
        llm: The call's Gemini service.
    """

    def __init__(self, control: CallControl, user_aggregator: Any, llm: CallGeminiLive) -> None:
        """Create the sink; see the class docstring for the arguments."""
        if not hasattr(user_aggregator, "_vad_controller"):
            raise TypeError(
                f"CallerAudioPath: {type(user_aggregator).__name__} has no '_vad_controller'; "
                "expected Pipecat 1.14's LLMUserAggregator (check the pipecat-ai version)"
            )
        self._control = control
        self._user = user_aggregator
        self._llm = llm
        self._failed = False

    async def __call__(self, frame: InputAudioRawFrame) -> None:
        """Handle one caller audio frame; errors are logged (once per call), never raised."""
        try:
            if self._control.in_greeting_grace():
                frame = InputAudioRawFrame(
                    audio=bytes(len(frame.audio)),
                    sample_rate=frame.sample_rate,
                    num_channels=frame.num_channels,
                )
            vad = self._user._vad_controller
            if vad is not None and not self._user._user_is_muted:
                await vad.process_frame(frame)
            await self._llm.caller_audio(frame)
        except Exception as e:
            # As in a Pipecat processor, one bad frame does not end the call.
            if not self._failed:
                self._failed = True
                logger.exception(f"caller audio path failed: {e.__class__.__name__}")
