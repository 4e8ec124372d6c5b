"""The call's Gemini Live service: our own Pipecat ``LLMService`` on google-genai's public API.

``CallGeminiLive`` replaces a subclass of Pipecat's ``GeminiLiveLLMService`` that overrode ~20
of its private methods (five of them changed within a few minor releases). It subclasses
Pipecat's public ``LLMService`` base for function calling (``register_function``,
``run_function_calls``, ``cancel_on_interruption``) and overrides only public methods. Its
parts, each in its own module: ``connection.LiveConnection`` (the session, resumption, GoAway
handover, reconnects, failures), ``caller_input.CallerInput`` (caller audio: hot path,
audioStreamEnd, activity windows), ``replies.Replies`` (server messages -> bot-turn frames),
``text_input.TextInput`` (the initial history, instructions, the caller's keyed entries). This
module wires them to the pipeline's frames and runs the call's tools: tool calls run through
``run_function_calls``; results go back with ``send_tool_response`` (NON_BLOCKING tools with a
``scheduling`` hint and ``willContinue``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from google import genai
from google.genai.types import LiveConnectConfig, LiveServerMessage
from loguru import logger
from pipecat.adapters.llm.services.gemini_live_adapter import GeminiLiveLLMAdapter
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    FunctionCallResultFrame,
    InputAudioRawFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMServiceMetadataFrame,
    LLMSetToolsFrame,
    SpeechControlParamsFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessorSetup
from pipecat.services.llm_service import FunctionCallFromLLM, LLMService
from pipecat.services.settings import LLMSettings

from pipelines import gemini_models
from pipelines.gemini.caller_input import CallerInput
from pipelines.gemini.clients import GeminiClients
from pipelines.gemini.connection import LiveConnection, parse_duration_secs
from pipelines.gemini.replies import Replies
from pipelines.gemini.text_input import TextInput
from pipelines.gemini.tools import ToolBook
from pipelines.gemini.transcripts import Transcripts
from pipelines.ports import NO_CALL_METRICS, CallMetrics

__all__ = ["CallGeminiLive", "GeminiClients", "parse_duration_secs"]

SessionFailedCallback = Callable[[int | None, str], Awaitable[None]]


def _version(model: str) -> tuple[int, int] | None:
    match = re.search(r"gemini(?:-[a-z]+)*-(\d+)(?:\.(\d+))?", model)
    return (int(match.group(1)), int(match.group(2) or 0)) if match else None


class CallGeminiLive(LLMService):
    """The Gemini Live service of one phone call (see the module docstring).

    Args:
        client: The process's shared ``genai.Client`` for the persona's API version.
        model: The model name (``models/...``).
        config: The persona's complete ``LiveConnectConfig`` (no resumption handle).
        on_session_failed: Awaited once with ``(close_code, reason)`` when the session is
            rejected or lost for good; the call should end.
        on_session_ready: Called each time a Live API session is ready.
        audio_stream_end_secs: Seconds of caller silence (local VAD) before
            ``audioStreamEnd``; ``None`` never sends it.
        metrics: Where bridge latency in, audio seconds and the call's model events
            (barge-ins, caller turns, handovers, Live API closes, tokens) are reported.
        time_scale: Multiplies the GoAway handover margin and the futile-resume window.
        inference_on_context_initialization: Have the model answer the initial history.
        turn_end_lag_secs: How long before ``UserStoppedSpeakingFrame`` the caller went quiet
            (``pipelines.call.turns.turn_end_lag_secs``: the VAD's ``stop_secs`` and the turn
            strategy's wait); 0 without local VAD.
        **kwargs: Passed to ``LLMService``.
    """

    adapter_class = GeminiLiveLLMAdapter

    def __init__(
        self,
        *,
        client: genai.Client,
        model: str,
        config: LiveConnectConfig,
        on_session_failed: SessionFailedCallback,
        on_session_ready: Callable[[], None] | None = None,
        audio_stream_end_secs: float | None = None,
        metrics: CallMetrics = NO_CALL_METRICS,
        time_scale: float = 1.0,
        inference_on_context_initialization: bool = True,
        turn_end_lag_secs: float = 0.0,
        **kwargs: Any,
    ) -> None:
        # The session's settings live in ``config``; Pipecat's settings only name the model.
        unused: dict[str, Any] = dict.fromkeys(
            ("system_instruction", "temperature", "max_tokens", "top_p", "top_k",
             "frequency_penalty", "presence_penalty", "seed", "filter_incomplete_user_turns",
             "user_turn_completion_config")
        )  # fmt: skip
        super().__init__(settings=LLMSettings(model=model, **unused), **kwargs)
        self.model = model
        version = _version(model)
        self._tools = ToolBook(version is None or version < (3, 0) or version >= (3, 8))
        spec = gemini_models.lookup(model)
        mid_session_client_content = spec is None or spec.mid_session_client_content
        self._call_metrics = metrics
        self._turn_end_lag_secs = turn_end_lag_secs
        self._on_session_ready = on_session_ready
        self._on_session_failed = on_session_failed
        self._conn = LiveConnection(
            client,
            model,
            config,
            on_ready=self._session_ready,
            on_message=self._on_server_message,
            on_failed=on_session_failed,
            can_hand_over=lambda: self._replies.held_end is None,
            time_scale=time_scale,
            context_notes=mid_session_client_content,
            metrics=metrics,
        )
        ric = config.realtime_input_config
        aad = ric.automatic_activity_detection if ric is not None else None
        self._input = CallerInput(
            self._conn,
            self._send_error,
            metrics,
            stream_end_secs=audio_stream_end_secs,
            server_vad_disabled=bool(aad is not None and aad.disabled),
        )
        self._replies = Replies(self, self._conn, metrics, self._tool_calls)
        self._text = TextInput(
            self._conn,
            self._input,
            invocation_params=self._invocation_params,
            send_error=self._send_error,
            start_ttfb=self.start_ttfb_metrics,
            gemini_3=version is not None and version[0] == 3,
            mid_session_client_content=mid_session_client_content,
            inference_on_init=inference_on_context_initialization,
        )
        # The call's model watchdog (``pipelines.call.watchdog.ModelWatchdog``), if any: told
        # of model audio, generation ends, caller turns and interruptions.
        self.watchdog: Any = None

    # public interface ------------------------------------------------------------------

    @property
    def connection(self) -> LiveConnection:
        """The call's Live API connection."""
        return self._conn

    @property
    def transcripts(self) -> Transcripts:
        """The call's transcripts (set ``listener`` to follow them)."""
        return self._replies.transcripts

    def register_function(
        self,
        function_name: str | None,
        handler: Any,
        *,
        cancel_on_interruption: bool | None = None,
        **kwargs: Any,
    ) -> None:
        """``LLMService.register_function``; a tool not cancelled on interruption is async."""
        if cancel_on_interruption is False and function_name:
            self._tools.async_tools.add(function_name)
        super().register_function(
            function_name, handler, cancel_on_interruption=cancel_on_interruption, **kwargs
        )

    @property
    def accepts_intermediate_function_call_results(self) -> bool:
        """Only NON_BLOCKING calls take intermediate results (``willContinue``)."""
        return self._tools.non_blocking

    def can_generate_metrics(self) -> bool:
        """Token usage and TTFB metrics are reported."""
        return True

    def service_metadata_frame(self) -> LLMServiceMetadataFrame:
        """A realtime (speech-to-speech) service; turns come from local VAD."""
        return LLMServiceMetadataFrame(service_name=self.name, is_realtime_service=True)

    async def caller_audio(self, frame: InputAudioRawFrame) -> None:
        """One frame of caller audio, from ``pipelines.call.caller_audio`` (not the pipeline)."""
        await self._input.audio(frame)

    async def play_clip(self, audio: bytes, sample_rate: int, *, final: bool = False) -> None:
        """Play pre-recorded audio (the watchdog's clips) as bot audio, in order with replies.

        Pushed downstream as ``TTSAudioRawFrame`` like model audio (paced, cleared by a
        barge-in, marked); bracketed as a turn of its own, kept out of the context, unless a
        reply is in progress (a stalled one: the clip joins it). ``final``: the last thing the
        call says: the reply in progress ends, the connection closes (nothing may talk over
        it), and the clip cannot be interrupted.
        """
        if final:
            await self._replies.interrupted_locally()
            await self._conn.close()
        own_turn = not self._replies.responding
        if own_turn:
            await super().push_frame(TTSStartedFrame(append_to_context=False))
        frame = TTSAudioRawFrame(audio=audio, sample_rate=sample_rate, num_channels=1)
        frame.interruptible = not final
        await super().push_frame(frame)
        if own_turn:
            await super().push_frame(TTSStoppedFrame())

    async def reconnect(self) -> bool:
        """Move to a new Live API connection now, resuming the session (the watchdog).

        ``LiveConnection.restart``; False without an open connection or while ending.
        """
        conn = self._conn
        if conn.session is None or conn.closing:
            return False
        return conn.restart()

    async def instruct(self, text: str) -> bool:
        """Give the model an instruction and have it answer now; False if not sent.

        ``TextInput.instruct``: a completed client turn, or realtime text on models that refuse
        mid-session ``clientContent``.
        """
        return await self._text.instruct(text)

    async def caller_text(self, text: str) -> bool:
        """Text the caller typed (an entry of keys, ``pipelines.call.dtmf``): a caller turn.

        ``TextInput.caller_text``: realtime text; False when it was neither sent nor kept.
        """
        return await self._text.caller_text(text)

    # lifecycle -------------------------------------------------------------------------

    async def setup(self, setup: FrameProcessorSetup) -> None:  # type: ignore[override]
        """Set the processor up and start connecting (before the pipeline's StartFrame)."""
        await super().setup(setup)
        self._conn.start()

    async def stop(self, frame: EndFrame) -> None:
        """Stop the service and close the connection."""
        await super().stop(frame)
        await self._close()

    async def cancel(self, frame: CancelFrame) -> None:
        """Cancel the service and close the connection."""
        await super().cancel(frame)
        await self._close()

    async def cleanup(self) -> None:
        """Cancel the call's own timers, then clean up the service."""
        await super().cleanup()
        await self._close()

    async def _close(self) -> None:
        self._input.close()
        self._replies.close()
        await self._conn.close()
        await self.stop_all_metrics()

    # frames from the pipeline ----------------------------------------------------------

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Handle the pipeline's frames; most pass through."""
        if isinstance(frame, EndFrame) and self._replies.hold_end(frame):
            return
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            await self._text.context_frame(frame.context)
        elif isinstance(frame, InputAudioRawFrame):
            await self._input.audio(frame)
            await self.push_frame(frame, direction)
        elif isinstance(frame, InterruptionFrame):
            self._call_metrics.barge_in("local_vad")
            await self._replies.interrupted_locally()
            if self.watchdog is not None:
                self.watchdog.interrupted()
            await self.push_frame(frame, direction)
        elif isinstance(frame, UserStartedSpeakingFrame):
            self._call_metrics.caller_started()
            if self.watchdog is not None:
                self.watchdog.caller_started()
            await self._input.user_started()
            await self.push_frame(frame, direction)
        elif isinstance(frame, UserStoppedSpeakingFrame):
            await self._user_stopped()
            await self.push_frame(frame, direction)
        elif isinstance(frame, SpeechControlParamsFrame):
            if frame.vad_params is not None:
                self._input.set_vad_start_secs(frame.vad_params.start_secs)
            await self.push_frame(frame, direction)
        elif not isinstance(frame, LLMSetToolsFrame):  # tools are fixed for the session
            await self.push_frame(frame, direction)

    async def push_frame(
        self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM
    ) -> None:
        """Push a frame; a function call result is sent to the model on its way."""
        if direction == FrameDirection.DOWNSTREAM and isinstance(frame, FunctionCallResultFrame):
            await self._tool_result(frame)
        elif isinstance(frame, TTSAudioRawFrame) and self.watchdog is not None:
            self.watchdog.model_audio(len(frame.audio) / (frame.sample_rate * 2))
        await super().push_frame(frame, direction)

    async def _user_stopped(self) -> None:
        self._call_metrics.caller_turn_ended(self._turn_end_lag_secs)
        if self.watchdog is not None:
            self.watchdog.caller_turn_ended()
        await self._input.user_stopped()
        await self.start_ttfb_metrics()
        await self._text.caller_turn_ended()

    async def _invocation_params(self, context: LLMContext) -> Mapping[str, Any]:
        return await self.get_llm_adapter().get_llm_invocation_params(context)

    # the connection's events -----------------------------------------------------------

    async def _session_ready(self, resumed: bool) -> None:
        self._input.ready = False
        self._tools.reset()
        await self._replies.new_connection()  # a reply cut off by a drop is over
        if self._on_session_ready is not None:
            self._on_session_ready()
        await self._text.session_ready(resumed)

    async def _on_server_message(self, message: LiveServerMessage) -> None:
        await self._replies.message(message)
        if self.watchdog is not None and message.server_content is not None:
            self.watchdog.server_content(message.server_content)

    async def _send_error(self, error: Exception) -> None:
        if self._conn.closing or self._conn.session is None:
            return  # in flight when the connection went: expected
        await self.push_error(error_msg=f"Send error: {error}")

    # tools -----------------------------------------------------------------------------

    async def _tool_calls(self, calls: list[Any]) -> None:
        context = self._text.context
        if context is None:
            logger.error("a tool call before the context arrived")
        found = [
            FunctionCallFromLLM(
                context=context,
                tool_call_id=f.id or str(uuid.uuid4()),
                function_name=f.name or "",
                arguments=f.args or {},
            )
            for f in calls
        ]
        for call in found:
            self._tools.called(call.tool_call_id, call.function_name)
        await self.run_function_calls(found)

    async def _tool_result(self, frame: FunctionCallResultFrame) -> None:
        response = self._tools.response(frame)
        if response is None or self._conn.closing:
            return
        try:
            await self._conn.send_tool_response(function_responses=response)
        except Exception as e:
            await self._send_error(e)
