"""One phone call's Pipecat pipeline: Twilio media socket <-> Gemini Live, and its lifecycle.

    transport.input() -> CallTap -> user aggregator (turns from local VAD frames: barge-in)
      -> CallGeminiLive -> transport.output() (8 kHz, paced, `clear` on interruption)
      -> CallTap -> assistant aggregator

Caller audio does not travel this chain: the transport input hands it to ``CallerAudioRoute``
(greeting grace, the batched local VAD, 8 k -> 16 k, the model), which costs no queue hop per
frame; the VAD's speech start/stop enter the chain at the transport input as Pipecat's VAD
frames, for the user aggregator's turn strategies.

The serializer and transport (output at 8 kHz) are built in ``media_transport``; the turn
strategies and VAD parameters in ``turns``.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from loguru import logger
from pipecat.frames.frames import EndFrame, LLMRunFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.workers.runner import WorkerRunner

from pipelines.call.caller_audio import CallerAudioRoute
from pipelines.call.clip_audio import CLIP_RATE_HZ, Clip, load_clip
from pipelines.call.control import CallControl, CallTap
from pipelines.call.dtmf import KeypadEntries
from pipelines.call.journal import CallJournal
from pipelines.call.media_transport import PHONE_RATE_HZ, media_transport
from pipelines.call.resources import CallInfo, ProcessResources
from pipelines.call.setup_gate import SetupSlot
from pipelines.call.turns import context_aggregators, turn_end_lag_secs, vad_params
from pipelines.call.warm_session import WarmSession
from pipelines.call.watchdog import ModelWatchdog
from pipelines.call.watchdog_settings import NUDGE_CUT_OFF, NUDGE_NO_REPLY, WatchdogSettings
from pipelines.gemini.service import CallGeminiLive
from pipelines.personas import enabled_tools
from pipelines.ports import (
    CallMetrics,
    NoCallMetrics,
)
from pipelines.tools.call_tools import CallTools
from pipelines.twilio.serializer import TwilioMarkFrame

MODEL_IN_RATE_HZ = 16000
# After the watchdog's reconnect, the model is asked to answer once the new connection is live.
NUDGE_WAIT_SECS = 3.0


def _scaled(secs: float | None, scale: float) -> float | None:
    return None if secs is None else secs * scale


class CallPipeline:
    """Builds and runs one call's pipeline; ``run()`` returns when the call is over.

    Args:
        persona: The persona the call runs with (fixed for the whole call).
        info: The call's identifiers and parameters.
        ws: The prepared media WebSocket (``connected`` and ``start`` already read).
        resources: The process's shared resources.
        variables: Template variables for the system instruction and greeting.
        warm: The call's Live API session, opened at its webhook (pre-warming): its config is
            the call's, its session the first connection when usable; closed when the call ends.
    """

    def __init__(
        self,
        persona: Any,
        info: CallInfo,
        ws: web.WebSocketResponse,
        resources: ProcessResources,
        variables: Mapping[str, str],
        warm: WarmSession | None = None,
    ) -> None:
        self.persona = persona
        self._warm = warm
        self.info = info
        self._ws = ws
        self._resources = resources
        self.end_reason: str | None = None
        self._marks = 0
        self.rejection: tuple[int | None, str] | None = None
        self._setup_slot: SetupSlot | None = None
        self._started_at = time.monotonic()
        self.metrics: CallMetrics = (
            resources.call_metrics(persona.id, persona.model)
            if resources.call_metrics is not None
            else NoCallMetrics(resources.metrics)
        )

        # The serializer hangs up after the goodbye was played (pipelines.call.media_transport).
        self.serializer, self.transport = media_transport(ws, info, resources, self.metrics)
        scale = resources.time_scale
        self._greeting = persona.greeting_instruction(variables)
        if warm is not None:  # opened with the same persona and call values at the webhook
            model, config = warm.model, warm.config
        else:
            model, config = persona.connect_config(persona.render_system_instruction(variables))
        self.llm = CallGeminiLive(
            client=resources.gemini.get(persona.api_version()),
            model=model,
            config=config,
            on_session_failed=self._on_session_failed,
            on_session_ready=self._on_live_session_ready,
            metrics=self.metrics,
            audio_stream_end_secs=_scaled(persona.audio_stream_end_silence_secs, scale),
            time_scale=scale,
            inference_on_context_initialization=self._greeting is not None,
            turn_end_lag_secs=turn_end_lag_secs(persona),
        )
        # The model watchdog: holding phrase, reconnect, apology (pipelines.call.watchdog).
        hold_path, apology_path = persona.clip_paths()
        self.watchdog = ModelWatchdog(
            WatchdogSettings.for_persona(persona, scale),
            hold=load_clip(hold_path),
            apology=load_clip(apology_path),
            play=self._play_clip,
            reconnect=self.llm.reconnect,
            give_up=self._give_up,
            nudge=self._nudge,
            expect_greeting=self._greeting is not None,
            label=f"call {info.call_sid}:",
        )
        self.llm.watchdog = self.watchdog
        self.llm.connection.preopened = warm
        # The call's transcript and figures, for its record (pipelines.call.journal).
        hook = resources.turn_ended
        self.journal = CallJournal(
            started=self._started_at,
            keep_text=persona.records.transcript,
            stop_lag_secs=turn_end_lag_secs(persona),
            on_turn=functools.partial(hook, info.call_sid) if hook is not None else None,
        )
        self.setup_secs: float | None = None
        self.llm.transcripts.listener = self.journal
        self.llm.connection.on_gap = self.watchdog.connection_gap
        self.context = LLMContext()
        user_agg, assistant_agg = context_aggregators(self.context)  # pipelines.call.turns
        self.control = CallControl(
            persona,
            instruct=self._instruct,
            hang_up=self._hang_up,
            redirect=self._redirect if resources.rest else None,
            wait_played=self._wait_played,
            time_scale=scale,
        )
        handlers = {
            "end_call": self.control.end_call_tool,
            "transfer_call": self.control.transfer_call_tool,
        }
        for name in enabled_tools(persona):
            self.llm.register_function(
                name, handlers[name], cancel_on_interruption=not persona.tools_async
            )
        # The persona's HTTP tools (pipelines.tools): requests on the shared session, logged.
        self.http_tools = CallTools(
            persona.http_tools,
            model_default_async=persona.tools_async,
            http=resources.http,
            env_value=resources.env_value,
            metrics=self.metrics,
            started=self._started_at,
            call_sid=info.call_sid,
        )
        self.http_tools.register(self.llm)

        pipeline = Pipeline(
            [
                self.transport.input(),
                CallTap(self.control),
                user_agg,
                self.llm,
                self.transport.output(),
                CallTap(self.control, self.journal),
                assistant_agg,
            ]
        )
        self.worker = PipelineWorker(
            pipeline,
            params=PipelineParams(
                audio_in_sample_rate=MODEL_IN_RATE_HZ, audio_out_sample_rate=PHONE_RATE_HZ
            ),
            enable_rtvi=False,
            # No per-frame observers: turn tracking and the idle-timeout observer each cost a
            # queue hop per frame pushed anywhere in the pipeline (CallControl enforces the
            # persona's idle and duration limits instead).
            enable_turn_tracking=False,
            idle_timeout_secs=None,
        )
        # Caller audio skips the pipeline (pipelines.call.caller_audio); control frames travel it.
        self.transport.input().caller_route = caller_route = CallerAudioRoute(
            self.control,
            self.llm,
            model_rate_hz=MODEL_IN_RATE_HZ,
            vad=resources.vad_model,
            vad_params=vad_params(persona),
        )
        # Keys the caller presses: entries to the model, mapped keys acted on (pipelines.call.dtmf).
        self.keypad = KeypadEntries(
            persona.dtmf,
            send=self.llm.caller_text,
            connected=self.llm.connection.connected,
            on_sent=self.watchdog.expect_reply,
            actions=self.control,
            time_scale=scale,
            caller_quiet=caller_route.caller_quiet,
        )
        self.transport.input().dtmf_route = self.keypad
        self.transport.event_handler("on_client_connected")(self._on_connected)
        self.transport.event_handler("on_client_disconnected")(self._on_disconnected)
        self.transport.event_handler("on_media_timeout")(self._on_media_timeout)
        self.transport.event_handler("on_input_abuse")(self._on_input_abuse)

    async def run(self) -> None:
        """Run the call until it ends; every task of the call has ended when this returns."""
        runner = WorkerRunner(handle_sigint=False, handle_sigterm=False)
        self.control.start()
        try:
            # Setups take turns (pipelines.call.setup_gate); the slot is freed once the Live API
            # session is ready (_on_session_ready). A warm open still waiting or running hands
            # its slot over: one per call (pipelines.call.warm_session).
            warm_slot = await self._warm.take_setup_slot() if self._warm is not None else None
            self._setup_slot = warm_slot or await self._resources.setup_gate.enter()
            await runner.add_workers(self.worker)
            await runner.run()
        finally:
            self.watchdog.stop()
            if self._warm is not None:
                await self._warm.close()  # unclaimed (the call ended first) or already released
            self._on_session_ready()
            await self.keypad.stop()
            await self.control.stop()
            if self.end_reason is None:
                self.end_reason = self.control.ending or "pipeline ended"

    # events ----------------------------------------------------------------------------

    async def _on_connected(self, _transport: Any, _client: Any) -> None:
        self.watchdog.start(since=self._started_at)
        if self._greeting:
            self.context.add_message({"role": "developer", "content": self._greeting})
        await self.worker.queue_frames([LLMRunFrame()])

    async def _on_disconnected(self, _transport: Any, _client: Any) -> None:
        self.serializer.disable_hang_up()
        if self.end_reason is None:
            code = self._ws.close_code
            if self.serializer.bad_input.get("too_large"):  # aiohttp closed it 1009 for us
                self.end_reason = "stream closed 1009: message too large"
            elif code in (None, 1000):
                self.end_reason = "caller hung up"
            else:
                self.end_reason = f"stream closed {code}"
        await self.worker.cancel()

    async def _on_media_timeout(self, _transport: Any, secs: float) -> None:
        # The stream is open but dead: free the Gemini session and the admission slot now, not
        # at the persona's maximum duration; Twilio, if it still hears us, plays the apology.
        await self.abort(f"no media from Twilio for {secs:g} s")

    async def _on_input_abuse(self, _transport: Any, reason: str) -> None:
        # Audio faster than real time or a message flood, beyond bounds (input_limits).
        await self.abort(reason, close_code=1008)

    def _on_live_session_ready(self) -> None:
        if self.setup_secs is None:
            self.setup_secs = time.monotonic() - self._started_at
        self.metrics.session_ready()
        self.watchdog.session_ready()
        self._on_session_ready()

    def _on_session_ready(self) -> None:
        if self._setup_slot is not None:
            self._setup_slot.release()
            self._setup_slot = None
            if self._resources.call_ready is not None:
                self._resources.call_ready()

    async def _on_session_failed(self, code: int | None, reason: str) -> None:
        self.rejection = (code, reason)
        if self._resources.session_failed is not None:
            self._resources.session_failed(self.info.call_sid, code, reason)
        await self.abort(f"Live API closed {code}" if code else "Live API unreachable")

    async def abort(self, reason: str, *, close_code: int = 1011) -> None:
        """End the call at once, abnormally.

        The stream closes without a REST hang-up, so Twilio plays the TwiML apology instead
        of leaving the caller in dead air.
        """
        if self.end_reason is None:
            self.end_reason = reason
        self.serializer.disable_hang_up()
        await self._close_ws(close_code, reason)
        await self.worker.cancel()

    # call control hooks ----------------------------------------------------------------

    async def _instruct(self, text: str) -> bool:
        sent = await self.llm.instruct(text)
        if not sent and not self.llm.connection.connected.is_set():
            # Mid-handover or reconnect (a drain's goodbye, an announcement): say it once the
            # connection is live again rather than never (bounded; the caller's own fallback
            # still ends the call if it does not come back).
            try:
                await asyncio.wait_for(self.llm.connection.connected.wait(), NUDGE_WAIT_SECS)
            except TimeoutError:
                return False
            sent = await self.llm.instruct(text)
        if sent:
            self.watchdog.expect_reply()
        return sent

    async def _play_clip(self, clip: Clip, final: bool) -> None:
        await self.llm.play_clip(clip.audio, CLIP_RATE_HZ, final=final)

    async def _nudge(self, cut_off: bool) -> None:
        """After the watchdog's reconnect: have the model answer (once re-sent input is in)."""
        try:
            await asyncio.wait_for(self.llm.connection.connected.wait(), NUDGE_WAIT_SECS)
        except TimeoutError:
            return
        await self.llm.instruct(NUDGE_CUT_OFF if cut_off else NUDGE_NO_REPLY)

    async def _give_up(self, reason: str) -> None:
        """The model stayed unresponsive: after the apology, end the call normally."""
        await self._hang_up(reason)

    async def _wait_played(self, timeout_secs: float) -> None:
        """Wait until the audio sent so far has been played (a Twilio mark comes back)."""
        self._marks += 1
        name = f"played-{self._marks}"
        await self.worker.queue_frames([TwilioMarkFrame(mark_name=name)])
        await self.transport.wait_for_mark(name, timeout_secs)

    async def _hang_up(self, reason: str) -> None:
        """End the call normally.

        The output drains, waits for its end mark to come back (the goodbye was played),
        hangs up through the REST API (with credentials) and closes the stream.
        """
        self.end_reason = reason
        await self.worker.queue_frames([EndFrame()])

    async def _redirect(self, twiml: str) -> bool:
        rest = self._resources.rest
        if rest is None:
            return False
        ok = await rest.redirect(self.info.call_sid, twiml)
        if ok:
            self.end_reason = "transferred"
        return ok

    async def _close_ws(self, code: int, message: str) -> None:
        if not self._ws.closed:
            try:
                await asyncio.wait_for(self._ws.close(code=code, message=message.encode()), 1.0)
            except (TimeoutError, ConnectionError) as e:
                logger.debug(f"closing the media socket: {e}")
