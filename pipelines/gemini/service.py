"""Pipecat's Gemini Live service, wrapped for one process serving many phone calls.

What this fixes in ``GeminiLiveLLMService`` (pipecat 1.14), each a pitfall in
``shared/reference/pipecat-1.x.md``:

- **Per-call clients.** The service builds a ``genai.Client`` per instance (three SSL contexts,
  ~60 ms of blocked event loop). Here every call shares one client per API version.
- **Unbounded bot-audio buffer.** ``_bot_audio_buffer`` grows by every byte of bot speech and is
  never read (~2.9 MB per minute of bot speech per call). Here it is a sink that keeps nothing.
- **Silent rejections.** A setup the Live API rejects (close 1007/1008 from ``connect()``) only
  logs "unexpected exception" in the service; permanent mid-session closes are retried three
  times. Here both end the call at once through ``on_session_failed``, so the caller hears the
  TwiML apology and the log names the persona file and the fix.
- **GoAway ignored.** The service lets the ~10-minute connection cap arrive as a drop. Here a
  ``goAway`` starts a handover: at the next quiet moment (never later than one second before
  the deadline) the session reconnects with its latest resumption handle.
- **No audio-stream-end.** After the persona's seconds of caller silence (local VAD), the
  service sends ``audioStreamEnd`` and stops streaming silence; a rolling pre-roll is kept, and
  when the caller speaks again it is sent first, so the speech onset is not lost.
- **Bundled 3.x messages.** Pipecat plays only ``parts[0]`` of a ``modelTurn``; 3.x bundles
  several parts, transcripts and ``turnComplete``: split here (``live_receive.unbundle``).
- **3.1 refuses mid-session ``clientContent``:** ``instruct`` sends realtime text there.
- **Stale audio after a local barge-in.** When local VAD interrupts, the model keeps streaming
  the reply until its own VAD notices; the service would start playing that tail again. Here the
  rest of an interrupted generation is dropped (audio and its transcript) until the model ends
  that turn.

Hot paths: caller audio arrives from ``pipelines.call.caller_audio`` (not the pipeline) and is
sent as prebuilt JSON (``realtime_input``); audio messages from the model are parsed by
``live_receive``. Bridge latency and audio seconds go to the ``BridgeMetrics`` handed in.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from google import genai
from google.genai.errors import APIError
from google.genai.types import Blob, Content, LiveServerMessage, Part
from loguru import logger
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    TTSAudioRawFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.google.gemini_live.llm import GeminiLiveLLMService

from pipelines import gemini_models
from pipelines.frame_metadata import RX_EACH_KEY, RX_KEY
from pipelines.gemini import live_receive
from pipelines.gemini.clients import GeminiClients
from pipelines.gemini.realtime_input import realtime_audio_message
from pipelines.ports import NO_METRICS, BridgeMetrics

# Close codes the Live API uses for setups and requests that will never succeed as sent.
__all__ = ["CallGeminiLive", "GeminiClients", "parse_duration_secs"]

PERMANENT_CLOSE_CODES = frozenset({1007, 1008})
# Caller audio kept while the stream is paused after audioStreamEnd, sent first on resume.
STREAM_END_PREROLL_SECS = 0.5
# A GoAway handover waits for a quiet moment, but never past this much before the deadline.
HANDOVER_MARGIN_SECS = 1.0
# A resumed connection that ends this soon resumed a session the service will not keep (the
# 15-minute audio-session limit, a session it lost): the next connection starts a fresh
# session seeded with the call's context instead of resuming into the same end.
FUTILE_RESUME_SECS = 3.0


def parse_duration_secs(value: str | None, default: float = 10.0) -> float:
    """A protobuf Duration string (``"50s"``, ``"1.5s"``) in seconds."""
    if not value:
        return default
    try:
        return float(value.strip().removesuffix("s"))
    except ValueError:
        return default


SessionFailedCallback = Callable[[int | None, str], Awaitable[None]]


class _DiscardingBuffer:
    """Stands in for ``bytearray`` where the service appends audio nobody reads."""

    def extend(self, _data: bytes) -> None:
        return None

    def clear(self) -> None:
        return None

    def __len__(self) -> int:
        return 0


class CallGeminiLive(GeminiLiveLLMService):
    """``GeminiLiveLLMService`` for one phone call, on a shared client.

    Args:
        client: The process's shared ``genai.Client`` for the persona's API version.
        on_session_failed: Awaited once with ``(close_code, reason)`` when the session is
            rejected or lost for good; the call should end.
        adjust_config: Applied to each ``LiveConnectConfig`` before connecting (persona
            fields Pipecat has no setting for, such as transcription off).
        audio_stream_end_secs: Seconds of caller silence (local VAD) before
            ``audioStreamEnd``; ``None`` never sends it.
        on_session_ready: Called each time a Live API session is ready.
        metrics: Where bridge latency in and model audio seconds are reported.
        time_scale: Multiplies the GoAway handover margin and the futile-resume window, for
            tests against an emulator whose limits are scaled the same way.
        **kwargs: Passed to ``GeminiLiveLLMService``.
    """

    def __init__(
        self,
        *,
        client: genai.Client,
        on_session_failed: SessionFailedCallback,
        adjust_config: Callable[[Any], Any] | None = None,
        audio_stream_end_secs: float | None = None,
        on_session_ready: Callable[[], None] | None = None,
        metrics: BridgeMetrics = NO_METRICS,
        time_scale: float = 1.0,
        **kwargs,
    ) -> None:
        self._time_scale = time_scale
        self._bridge_metrics = metrics
        self._on_session_ready = on_session_ready
        self._shared_client = client
        self._adjust_config = adjust_config
        self._on_session_failed = on_session_failed
        self._session_failed = False
        self._generating = False
        self._dropping_interrupted_turn = False
        self._stream_end_secs = audio_stream_end_secs
        self._stream_end_task: asyncio.Task[None] | None = None
        self._stream_paused = False
        self._preroll: deque[bytes] = deque()
        self._preroll_bytes = 0
        self._preroll_rate = 16000
        self._bot_quiet = asyncio.Event()
        self._bot_quiet.set()
        self._user_quiet = asyncio.Event()
        self._user_quiet.set()
        self._handover_task: asyncio.Task[None] | None = None
        self._resumed_at: float | None = None
        self._message_rx_at = 0.0
        super().__init__(api_key="shared-client", **kwargs)
        # Turns come from local VAD in the user aggregator; the per-call advice is noise.
        self._warned_realtime_service_no_turn_frames = True
        self._bot_audio_buffer = _DiscardingBuffer()  # type: ignore[assignment]
        spec = gemini_models.lookup(str(getattr(self._settings, "model")))  # noqa: B009 (mypy)
        self._client_content_mid_session = spec is None or spec.mid_session_client_content

    def create_client(self) -> None:
        """Use the process's shared client instead of building one per call."""
        self._client = self._shared_client

    async def _fail_session(self, code: int | None, reason: str) -> None:
        if self._session_failed:
            return
        self._session_failed = True
        await self._on_session_failed(code, reason)

    async def _connection_task_handler(self, config) -> None:
        if self._adjust_config is not None:
            config = self._adjust_config(config)
        try:
            await super()._connection_task_handler(config)
        except APIError as e:
            # Raised by connect(): the setup was refused (or the service is unavailable).
            await self._fail_session(e.code, e.details or e.message or str(e))
        except OSError as e:
            await self._fail_session(None, f"cannot reach the Live API: {e}")
        except Exception as e:
            # e.g. an HTTP error at the WebSocket handshake (websockets.InvalidStatus), or an
            # answer the SDK cannot parse: the call must not stay connected in silence.
            await self._fail_session(None, f"Live API connection failed: {e!r}"[:200])

    async def _handle_connection_error(self, error: Exception) -> bool:
        if self._handover_task is not None and not self._handover_task.done():
            # The socket dropped before the GoAway handover ran: reconnect now, once.
            self._handover_task.cancel()
        if self._resume_was_futile():
            self._session_resumption_handle = None
        if isinstance(error, APIError) and error.code in PERMANENT_CLOSE_CODES:
            await self._fail_session(error.code, error.details or str(error))
            return False
        should_retry = await super()._handle_connection_error(error)
        if not should_retry:
            code = error.code if isinstance(error, APIError) else None
            await self._fail_session(code, f"Live API connection lost: {error}")
        return should_retry

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Note local interruptions and the caller's speech turns."""
        if isinstance(frame, InterruptionFrame) and self._generating:
            self._dropping_interrupted_turn = True
        elif isinstance(frame, UserStartedSpeakingFrame):
            self._user_quiet.clear()
            self._cancel_stream_end()
            await self._resume_stream()
        elif isinstance(frame, UserStoppedSpeakingFrame):
            self._user_quiet.set()
            self._schedule_stream_end()
        elif (
            isinstance(frame, InputAudioRawFrame)
            and self._stream_end_task is None
            and not self._stream_paused
            and not self._user_is_speaking
        ):
            self._schedule_stream_end()  # the caller has not spoken yet
        await super().process_frame(frame, direction)

    async def cleanup(self) -> None:
        """Cancel the call's own timers, then clean up the service."""
        self._cancel_stream_end()
        if self._handover_task is not None:
            await self.cancel_task(self._handover_task)
            self._handover_task = None
        await super().cleanup()

    async def instruct(self, text: str) -> bool:
        """Give the model an instruction and have it answer now.

        A completed client turn, or realtime text on models that refuse mid-session
        ``clientContent`` (the model table's ``mid_session_client_content``).

        Returns:
            False when it was not sent: no open session, or (realtime text) the session's
            initial history has not been sent yet.
        """
        if self._session is None or self._disconnecting:
            return False
        try:
            if not self._client_content_mid_session:
                # clientContent would close the session (1007): only the initial history
                # may use it. Realtime text is a caller turn the model answers at once; not
                # before that history was sent, which would then be refused.
                if not self._ready_for_realtime_input:
                    return False
                await self._session.send_realtime_input(text=text)
                return True
            turn = Content(role="user", parts=[Part(text=text)])
            await self._session.send_client_content(turns=[turn], turn_complete=True)
            if self._is_gemini_3:
                # Gemini 3.x runs inference on a completed turn only after realtime input.
                await self._session.send_realtime_input(text=" ")
        except Exception as e:
            await self._handle_send_error(e)
            return False
        return True

    # audio-stream-end ------------------------------------------------------------------

    def _schedule_stream_end(self) -> None:
        if self._stream_end_secs is None or self._stream_paused:
            return
        self._cancel_stream_end()
        self._stream_end_task = self.create_task(self._end_stream_later(), "audio-stream-end")

    def _cancel_stream_end(self) -> None:
        task, self._stream_end_task = self._stream_end_task, None
        if task is not None and not task.done():
            task.cancel()

    async def _end_stream_later(self) -> None:
        assert self._stream_end_secs is not None
        await asyncio.sleep(self._stream_end_secs)
        if self._session is None or not self._ready_for_realtime_input or self._user_is_speaking:
            return
        try:
            await self._session.send_realtime_input(audio_stream_end=True)
        except Exception as e:
            await self._handle_send_error(e)
            return
        self._stream_paused = True

    async def _resume_stream(self) -> None:
        # Caller audio arrives from the transport's task meanwhile: it joins the pre-roll until
        # the pre-roll has been sent, so the model hears the audio in order.
        while self._stream_paused:
            audio = b"".join(self._preroll)
            self._preroll.clear()
            self._preroll_bytes = 0
            if not audio:
                self._stream_paused = False
            elif self._session is not None and self._ready_for_realtime_input:
                try:
                    await self._session.send_realtime_input(
                        audio=Blob(data=audio, mime_type=f"audio/pcm;rate={self._preroll_rate}")
                    )
                except Exception as e:
                    self._stream_paused = False
                    await self._handle_send_error(e)
            else:
                self._stream_paused = False  # no session: nothing to resume on

    async def caller_audio(self, frame: InputAudioRawFrame) -> None:
        """One frame of caller audio, from ``pipelines.call.caller_audio`` (not the pipeline)."""
        if self._stream_end_task is None and not self._stream_paused and not self._user_is_speaking:
            self._schedule_stream_end()  # the caller has not spoken yet
        await self._send_user_audio(frame)

    async def _send_user_audio(self, frame: InputAudioRawFrame) -> None:
        # Bridge latency in: one sample per Twilio message in the batch.
        each = frame.metadata.get(RX_EACH_KEY)
        if each is not None:
            now = time.monotonic()
            record = self._bridge_metrics.bridge_in.add_secs
            for rx_at in each:
                record(now - rx_at)
        if not self._stream_paused:
            ws = self._fast_ws()
            if ws is None or (self._vad_disabled and not self._user_is_speaking):
                await super()._send_user_audio(frame)  # not ready, or the pre-roll path
                return
            try:
                await ws.send(realtime_audio_message(frame.audio, frame.sample_rate))
            except Exception as e:
                await self._handle_send_error(e)
            return
        self._preroll_rate = frame.sample_rate
        self._preroll.append(frame.audio)
        self._preroll_bytes += len(frame.audio)
        limit = int(STREAM_END_PREROLL_SECS * frame.sample_rate * 2 * frame.num_channels)
        while self._preroll_bytes > limit and self._preroll:
            self._preroll_bytes -= len(self._preroll.popleft())

    def _fast_ws(self) -> Any:
        """The session's socket when audio may be sent on it directly, else None."""
        session = self._session
        if (
            session is None
            or self._audio_input_paused
            or self._disconnecting
            or not self._ready_for_realtime_input
            or session._api_client.vertexai
        ):
            return None
        return session._ws

    # GoAway handover -------------------------------------------------------------------

    async def _handle_session_ready(self, session) -> None:
        # A new connection starts with no generation in flight.
        self._generating = False
        self._dropping_interrupted_turn = False
        self._resumed_at = time.monotonic() if self._session_resumption_handle else None
        live_receive.install(session)
        if self._on_session_ready is not None:
            self._on_session_ready()
        await super()._handle_session_ready(session)

    async def _set_bot_is_responding(self, responding: bool) -> None:
        await super()._set_bot_is_responding(responding)
        if responding:
            self._bot_quiet.clear()
        else:
            self._bot_quiet.set()

    def _start_handover(self, time_left: str | None) -> None:
        if self._handover_task is not None and not self._handover_task.done():
            return
        margin = HANDOVER_MARGIN_SECS * self._time_scale
        deadline = time.monotonic() + parse_duration_secs(time_left) - margin
        fresh = self._resume_was_futile()
        self._handover_task = self.create_task(self._handover(deadline, fresh), "goaway-handover")

    def _resume_was_futile(self) -> bool:
        at = self._resumed_at
        if at is None or time.monotonic() - at >= FUTILE_RESUME_SECS * self._time_scale:
            return False
        logger.debug("a resumed Live API connection ended at once: starting a fresh session")
        return True

    async def _handover(self, deadline: float, fresh: bool = False) -> None:
        """Reconnect with the latest resumption handle before the server drops the socket.

        Waits for a moment when neither side speaks (audio sent while reconnecting is lost),
        but not past the deadline. A call already ending keeps its old connection: the held
        ``EndFrame`` would be discarded by a reconnect.
        """
        while time.monotonic() < deadline:
            try:
                for quiet in (self._bot_quiet, self._user_quiet):
                    await asyncio.wait_for(quiet.wait(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                break
            if self._bot_quiet.is_set() and self._user_quiet.is_set():
                break
        if self._end_frame_pending_bot_turn_finished is not None or self._session is None:
            return
        logger.debug("GoAway: handing over to a new Live API connection")
        if fresh:
            self._session_resumption_handle = None  # the context is re-seeded from ours
        await self._reconnect()

    async def push_frame(
        self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM
    ) -> None:
        """Stamp model audio with its message's arrival time (bridge latency out)."""
        if isinstance(frame, TTSAudioRawFrame):
            frame.metadata[RX_KEY] = self._message_rx_at
            self._bridge_metrics.add_model_audio_secs(len(frame.audio) / (frame.sample_rate * 2))
        await super().push_frame(frame, direction)

    async def _handle_server_message(self, message: LiveServerMessage) -> None:
        self._message_rx_at = time.monotonic()
        if message.go_away is not None:
            self._start_handover(message.go_away.time_left)
        for piece in live_receive.unbundle(message):
            await self._handle_message_piece(piece)

    async def _handle_message_piece(self, message: LiveServerMessage) -> None:
        sc = message.server_content
        turn_over = False
        if sc is not None:
            turn_over = bool(sc.interrupted or sc.turn_complete or sc.generation_complete)
            if self._dropping_interrupted_turn:
                if sc.model_turn is not None or sc.output_transcription is not None:
                    sc.model_turn = None
                    sc.output_transcription = None
            elif sc.model_turn is not None:
                self._generating = True
        await super()._handle_server_message(message)
        if turn_over:
            self._generating = False
            if self._dropping_interrupted_turn:
                logger.debug("dropped the rest of an interrupted reply")
            self._dropping_interrupted_turn = False
