"""Server messages of the Live API turned into the bot-turn frames the call's pipeline consumes.

``Replies`` does for ``service.CallGeminiLive`` what Pipecat's Gemini service did, with the
call's own rules added:

- model audio -> ``TTSAudioRawFrame`` (24 kHz, stamped with its message's arrival ``RX_KEY``,
  model audio seconds to the metrics), bracketed by ``TTSStartedFrame`` +
  ``LLMFullResponseStartFrame`` and, at ``turnComplete``, ``TTSStoppedFrame`` +
  ``LLMFullResponseEndFrame``; every part of a bundled 3.x message is played
  (``live_receive.unbundle``);
- ``interrupted`` -> an interruption both ways; transcripts -> ``transcripts.Transcripts``;
  usage -> LLM usage metrics; a ``turnComplete`` is held while ``interactionStatus`` says
  ``IN_PROGRESS`` (the model still reasons) until it goes idle, or ``HELD_TURN_SILENCE_SECS``
  of server silence;
- **stale audio after a local barge-in:** when local VAD interrupts, the model keeps streaming
  the reply until its own VAD notices; the rest of that generation (audio and its transcript)
  is dropped until the model ends the turn;
- **EndFrame after the bot's turn:** an ``EndFrame`` waits for the turn to finish
  (``END_FRAME_HOLD_SECS`` at most), so a goodbye is played whole.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from google.genai.types import Content, LiveServerMessage
from loguru import logger
from pipecat.frames.frames import (
    EndFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)

from pipelines.frame_metadata import RX_KEY
from pipelines.gemini import live_receive
from pipelines.gemini.connection import LiveConnection
from pipelines.gemini.transcripts import Transcripts, token_usage
from pipelines.gemini.usage import token_counts
from pipelines.ports import CallMetrics

MODEL_RATE_HZ = 24000
# An EndFrame held for the bot's turn is released after this long without its end.
END_FRAME_HOLD_SECS = 30.0
# A turnComplete held while the model reasons (IN_PROGRESS) ends the turn after this silence.
HELD_TURN_SILENCE_SECS = 30.0

ToolCallsHandler = Callable[[list[Any]], Awaitable[None]]


def interaction_idle(sc: Any) -> bool | None:
    """True when the server reports idle, False while it still works, None if it says not."""
    status = getattr(sc, "interaction_status", None) if sc is not None else None
    value = getattr(status, "value", status)
    if value in ("IDLE", "REQUIRES_ACTION"):
        return True
    if value == "IN_PROGRESS":
        return False
    return None


class Replies:
    """The bot's side of one call, from server messages to frames (see the module docstring).

    Args:
        processor: The call's service; frames are pushed and metrics reported through it.
        connection: The call's Live API connection (arrival time, ``bot_quiet``).
        metrics: Where model audio seconds, the model's interruptions and tokens go.
        on_tool_calls: Awaited with a message's function calls.
    """

    def __init__(
        self,
        processor: Any,
        connection: LiveConnection,
        metrics: CallMetrics,
        on_tool_calls: ToolCallsHandler,
    ) -> None:
        self._p = processor
        self._conn = connection
        self._metrics = metrics
        self._on_tool_calls = on_tool_calls
        self.transcripts = Transcripts(processor)
        self.responding = False
        self._generating = False
        self._dropping = False
        self.held_end: EndFrame | None = None
        self._held_end_timer: asyncio.Task[None] | None = None
        self._held_turn = False
        self._held_turn_timer: asyncio.Task[None] | None = None

    async def message(self, message: LiveServerMessage) -> None:
        """One server message, in wire order."""
        for piece in live_receive.unbundle(message):
            await self._piece(piece)

    def hold_end(self, frame: EndFrame) -> bool:
        """Hold ``frame`` while the bot speaks; True if held (released at the turn's end)."""
        if not self.responding:
            return False
        logger.debug("holding the EndFrame until the bot's turn is finished")
        self.held_end = frame
        self._held_end_timer = self._p.create_task(self._release_end_later(), "end-frame-hold")
        return True

    async def interrupted_locally(self) -> None:
        """Local VAD interrupted the bot: drop the rest of this generation."""
        if self._generating:
            self._dropping = True
        self._discard_held_turn()
        if self.responding:
            await self._set_responding(False)
            await self._p.push_frame(TTSStoppedFrame())

    async def new_connection(self) -> None:
        """A new connection starts with no generation; a reply cut off by a drop is over."""
        self._generating = False
        self._dropping = False
        self._discard_held_turn()
        if self.responding:
            await self._end_response()

    def close(self) -> None:
        """Stop the timers."""
        self.transcripts.close()
        for task in (self._held_end_timer, self._held_turn_timer):
            if task is not None and not task.done() and task is not asyncio.current_task():
                task.cancel()

    async def _piece(self, message: LiveServerMessage) -> None:
        sc = message.server_content
        idle = interaction_idle(sc)
        if self._held_turn:
            self._start_held_turn_timer()  # any message proves the session alive
        if sc is not None:
            turn_over = bool(sc.interrupted or sc.turn_complete or sc.generation_complete)
            dropping = self._dropping
            if not dropping and sc.model_turn is not None:
                self._generating = True
            if sc.interrupted:
                logger.debug("Gemini VAD: interrupted")
                self._metrics.barge_in("model")
                await self._p.broadcast_interruption()
            if sc.model_turn is not None and not dropping:
                await self._model_audio(sc.model_turn)
            if sc.input_transcription is not None and sc.input_transcription.text:
                await self.transcripts.caller(sc.input_transcription.text, message)
            if sc.output_transcription is not None and not dropping:
                text = sc.output_transcription.text
                if text:
                    await self._start_response()
                    await self.transcripts.bot(text)
            if sc.turn_complete:
                if idle is False:
                    self._held_turn = True  # still reasoning: this only closes a chunk
                    self._start_held_turn_timer()
                else:
                    self._discard_held_turn()
                    await self._end_response()
                if message.usage_metadata is not None:
                    self.transcripts.usage(message.usage_metadata)
                    await self._p.start_llm_usage_metrics(token_usage(message.usage_metadata))
                    for kind, modality, count in token_counts(message.usage_metadata):
                        self._metrics.add_tokens(kind, modality, count)
            if turn_over:
                self._generating = False
                if self._dropping:
                    logger.debug("dropped the rest of an interrupted reply")
                self._dropping = False
        if message.tool_call is not None and message.tool_call.function_calls:
            await self._on_tool_calls(message.tool_call.function_calls)
        if message.tool_call_cancellation is not None:
            logger.debug("the model cancelled tool calls; their results will be ignored")
        if idle and self._held_turn:
            self._discard_held_turn()
            await self._end_response()

    async def _model_audio(self, turn: Content) -> None:
        for part in turn.parts or ():
            blob = part.inline_data
            if blob is None or not blob.data:
                continue
            if blob.mime_type not in (f"audio/pcm;rate={MODEL_RATE_HZ}", "audio/pcm"):
                logger.warning(f"unexpected model audio format {blob.mime_type}")
                continue
            await self._p.stop_ttfb_metrics()
            await self._start_response()
            frame = TTSAudioRawFrame(audio=blob.data, sample_rate=MODEL_RATE_HZ, num_channels=1)
            frame.metadata[RX_KEY] = self._conn.message_rx_at
            self._metrics.add_model_audio_secs(len(blob.data) / (MODEL_RATE_HZ * 2))
            await self._p.push_frame(frame)

    # the bot's turn --------------------------------------------------------------------

    async def _start_response(self) -> None:
        if not self.responding:
            await self._set_responding(True)
            await self._p.push_frame(TTSStartedFrame())
            await self._p.push_frame(LLMFullResponseStartFrame())

    async def _end_response(self) -> None:
        if self.responding:
            await self._set_responding(False)
            await self._p.push_frame(TTSStoppedFrame())
            await self._p.push_frame(LLMFullResponseEndFrame())

    async def _set_responding(self, responding: bool) -> None:
        if self.responding == responding:
            return
        self.responding = responding
        if responding:
            self._conn.bot_quiet.clear()
            return
        self._conn.bot_quiet.set()
        await self._release_end()

    async def _release_end(self) -> None:
        frame, self.held_end = self.held_end, None
        timer, self._held_end_timer = self._held_end_timer, None
        if timer is not None and not timer.done() and timer is not asyncio.current_task():
            timer.cancel()
        if frame is not None:
            self.responding = False
            await self._p.queue_frame(frame)

    async def _release_end_later(self) -> None:
        await asyncio.sleep(END_FRAME_HOLD_SECS)
        if self.held_end is not None:
            logger.warning(f"no end of the bot's turn in {END_FRAME_HOLD_SECS:g} s: ending")
            await self._release_end()

    def _start_held_turn_timer(self) -> None:
        self._cancel_held_turn_timer()
        self._held_turn_timer = self._p.create_task(self._held_turn_later(), "held-turn")

    def _cancel_held_turn_timer(self) -> None:
        task, self._held_turn_timer = self._held_turn_timer, None
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()

    def _discard_held_turn(self) -> None:
        self._cancel_held_turn_timer()
        self._held_turn = False

    async def _held_turn_later(self) -> None:
        await asyncio.sleep(HELD_TURN_SILENCE_SECS)
        if self._held_turn:
            logger.warning("interaction status stuck IN_PROGRESS: ending the bot's turn")
            self._held_turn = False
            await self._end_response()
