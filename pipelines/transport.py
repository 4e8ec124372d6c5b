"""Pipecat transport over an already-prepared aiohttp ``WebSocketResponse`` (Twilio Media Streams).

Mirrors Pipecat's ``FastAPIWebsocketTransport`` with four differences:

* Pacing runs on absolute deadlines with catch-up and a bounded lead (``pipelines.pacing``).
* Barge-in: on ``InterruptionFrame`` the ``clear`` is sent first, then no audio of the
  interrupted reply leaves after it (audio created before the interruption is dropped in
  ``write_audio_frame`` and while the MediaSender's queue is being reset).
* Twilio marks: ``TwilioMarkFrame`` is sent after the audio queued before it; a mark is sent
  after each reply (``TTSStoppedFrame``) and before hanging up; echoes fire
  ``on_mark(transport, name, played)``, where ``played`` is False for marks Twilio returned
  because of a ``clear``.
* Twilio ``stop`` ends the receive loop (``on_client_disconnected``), like the peer closing.

Events: ``on_client_connected(transport, ws)``, ``on_client_disconnected(transport, ws)``,
``on_mark(transport, name, played)``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import WSCloseCode, WSMessage, WSMsgType, web
from loguru import logger
from pipecat.frames.frames import (
    CancelFrame,
    ClientConnectedFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InputTransportMessageFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
    StartFrame,
    TTSStoppedFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessorSetup
from pipecat.serializers.base_serializer import FrameSerializer
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams
from pipecat.utils.utils import obj_id

from pipelines.pacing import Pacer
from pipelines.resampling import FirStreamResampler
from pipelines.twilio_serializer import (
    TwilioMarkEchoFrame,
    TwilioMarkFrame,
    TwilioSerializer,
    TwilioStopFrame,
)

END_MARK_NAME = "call-end"
# After the last chunk was sent, how long Twilio may still be playing (network and jitter).
CLEAR_MARGIN_SECS = 0.25


class AiohttpWebsocketParams(TransportParams):
    """Transport parameters.

    Parameters:
        serializer: Frame serializer (``TwilioSerializer`` for bad-input counters and marks).
        ws_close_timeout: Seconds to wait for the close handshake before shutdown goes on.
        max_lead_secs: How far sending may run ahead of playout (None = one chunk).
        idle_reset_secs: A playout gap longer than this restarts the pacing clock.
        mark_replies: Send a mark ``reply-<n>`` after each bot reply (on ``TTSStoppedFrame``).
        end_mark_timeout_secs: On ``EndFrame``, after the last audio, send a mark and wait this
            long for Twilio to echo it (= the goodbye was played) before hanging up; 0 disables.
    """

    serializer: FrameSerializer | None = None
    ws_close_timeout: float = 0.5
    max_lead_secs: float | None = None
    idle_reset_secs: float = 0.5
    mark_replies: bool = True
    end_mark_timeout_secs: float = 3.0


@dataclass
class _Mark:
    audio_secs: float  # bot audio sent before the mark
    cleared: bool = False  # pending when a clear was sent: its echo proves nothing


class _Client:
    """The WebSocket shared by input and output: send, receive, close once."""

    def __init__(self, ws: web.WebSocketResponse, close_timeout: float) -> None:
        self.ws = ws
        self._close_timeout = close_timeout
        self._users: set[str] = set()
        self._closing = False
        self._reset_logged = False

    def join(self, user: str) -> None:
        self._users.add(user)

    @property
    def is_connected(self) -> bool:
        return not self.ws.closed

    @property
    def is_closing(self) -> bool:
        return self._closing

    def receive(self) -> AsyncIterator[WSMessage]:
        return self.ws.__aiter__()

    async def send(self, data: str | bytes) -> bool:
        """Send; skip when closing/closed; a reset peer is logged once, never raised."""
        if self._closing or self.ws.closed:
            return False
        try:
            if isinstance(data, bytes):
                await self.ws.send_bytes(data)
            else:
                await self.ws.send_str(data)
        except ConnectionResetError as e:
            # Not marking the socket as closing here (#3912): the receive loop sees the close.
            if not self._reset_logged:
                self._reset_logged = True
                logger.info(f"WebSocket send skipped, peer connection reset: {e}")
            return False
        return True

    async def disconnect(self, user: str) -> None:
        """Close when the last user leaves, waiting at most ``close_timeout`` for the peer."""
        self._users.discard(user)
        if self._users or self._closing or self.ws.closed:
            return
        self._closing = True
        task = asyncio.create_task(
            self.ws.close(code=WSCloseCode.OK, message=b"call ended"), name="ws-close"
        )
        done, _ = await asyncio.wait({task}, timeout=self._close_timeout)
        if not done:
            logger.debug(f"WebSocket close exceeded {self._close_timeout}s; dropping the peer")
            task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            if not done:
                return
            raise
        except Exception as e:
            logger.warning(f"WebSocket close failed: {e.__class__.__name__} ({e})")


class AiohttpWebsocketInputTransport(BaseInputTransport):
    """Receives Twilio messages and pushes audio, DTMF and other frames."""

    def __init__(
        self,
        transport: AiohttpWebsocketTransport,
        client: _Client,
        params: AiohttpWebsocketParams,
        **kwargs: object,
    ) -> None:
        """Create the input side; use ``AiohttpWebsocketTransport.input()``."""
        super().__init__(params, **kwargs)
        self._transport = transport
        self._client = client
        self._ws_params = params
        self._receive_task: asyncio.Task[None] | None = None
        self._ending = False

    async def setup(self, setup: FrameProcessorSetup) -> None:  # type: ignore[override]
        """Join the shared client and set up the serializer."""
        await super().setup(setup)
        self._client.join("input")
        if self._ws_params.serializer:
            await self._ws_params.serializer.setup(setup)

    async def start(self, frame: StartFrame) -> None:
        """Fire ``on_client_connected``, start receiving, mark the transport ready."""
        await super().start(frame)
        await self._transport._call_event_handler("on_client_connected", self._client.ws)
        await self.push_frame(ClientConnectedFrame())
        if not self._receive_task:
            self._receive_task = self.create_task(self._receive_messages(), "ws-receive")
        await self.set_transport_ready(frame)

    async def stop(self, frame: EndFrame) -> None:
        """Leave the client; keep reading (marks and ``stop`` only) until the output closes.

        The output waits for the echo of its end mark before hanging up, so the receive loop
        must outlive the ``EndFrame``; ``cleanup()`` cancels it.
        """
        await super().stop(frame)
        self._ending = True
        await self._client.disconnect("input")

    async def cancel(self, frame: CancelFrame) -> None:
        """Stop receiving and leave the client."""
        await super().cancel(frame)
        await self._teardown()

    async def cleanup(self) -> None:
        """Stop receiving and leave the client (idempotent)."""
        await super().cleanup()
        await self._teardown()
        await self._transport.cleanup()

    async def _teardown(self) -> None:
        if self._receive_task:
            await self.cancel_task(self._receive_task)
            self._receive_task = None
        await self._client.disconnect("input")

    def _note(self, kind: str, detail: str) -> None:
        serializer = self._ws_params.serializer
        if isinstance(serializer, TwilioSerializer):
            serializer.note_bad_input(kind, detail)
        else:
            logger.debug(f"{self}: ignored {kind} ({detail})")

    async def _receive_messages(self) -> None:
        serializer = self._ws_params.serializer
        try:
            async for msg in self._client.receive():
                if msg.type == WSMsgType.BINARY:
                    self._note("binary", f"{len(msg.data)} bytes")
                    continue
                if msg.type == WSMsgType.ERROR:
                    code = getattr(msg.data, "code", None) or self._client.ws.close_code
                    too_big = code == WSCloseCode.MESSAGE_TOO_BIG
                    self._note("too_large" if too_big else "ws_error", str(msg.data)[:80])
                    break
                if msg.type != WSMsgType.TEXT or serializer is None:
                    continue
                frame = await serializer.deserialize(msg.data)
                if frame is None:
                    continue
                if isinstance(frame, TwilioMarkEchoFrame):
                    await self._transport._mark_echoed(frame.mark_name)
                elif isinstance(frame, TwilioStopFrame):
                    logger.debug(f"{self}: Twilio sent 'stop'; the call ended")
                    break
                elif self._ending:
                    continue  # the pipeline is ending: nothing more goes downstream
                elif isinstance(frame, InputAudioRawFrame):
                    await self.push_audio_frame(frame)
                elif isinstance(frame, InputTransportMessageFrame):
                    await self.broadcast_frame(InputTransportMessageFrame, message=frame.message)
                else:
                    await self.push_frame(frame)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            logger.exception(f"{self}: receive loop failed: {e.__class__.__name__}")
        # Only a disconnect we did not start ourselves is reported.
        if not self._client.is_closing:
            await self._transport._call_event_handler("on_client_disconnected", self._client.ws)


class AiohttpWebsocketOutputTransport(BaseOutputTransport):
    """Sends paced audio, ``clear`` on interruption, marks, and hangs up at the end."""

    def __init__(
        self,
        transport: AiohttpWebsocketTransport,
        client: _Client,
        params: AiohttpWebsocketParams,
        **kwargs: object,
    ) -> None:
        """Create the output side; use ``AiohttpWebsocketTransport.output()``."""
        super().__init__(params, **kwargs)
        self._transport = transport
        self._client = client
        self._ws_params = params
        self._pacer = Pacer(0.04)
        # Interruptible audio frames created before this id belong to an interrupted reply.
        self._stale_before_id = 0
        self._clearing = False
        self._reply_count = 0
        self.sent_audio_secs = 0.0
        self.clears_sent = 0
        self.clears_skipped = 0
        self._last_audio_sent_at = float("-inf")

    @property
    def pacer(self) -> Pacer:
        """The pacing clock (for playout estimates)."""
        return self._pacer

    async def setup(self, setup: FrameProcessorSetup) -> None:  # type: ignore[override]
        """Size the pacing clock from the output chunk; set up client and serializer."""
        await super().setup(setup)
        chunk_secs = self.audio_chunk_size / (
            self.sample_rate * 2 * self._params.audio_out_channels
        )
        self._pacer = Pacer(
            chunk_secs,
            max_lead_secs=self._ws_params.max_lead_secs,
            idle_reset_secs=self._ws_params.idle_reset_secs,
        )
        self._client.join("output")
        if self._ws_params.serializer:
            await self._ws_params.serializer.setup(setup)

    async def start(self, frame: StartFrame) -> None:
        """Start the media senders."""
        await super().start(frame)
        await self.set_transport_ready(frame)

    async def set_transport_ready(self, frame: StartFrame) -> None:
        """Create the media senders, then give them a low-latency resampler.

        The MediaSender builds a soxr VHQ stream resampler (85 ms mean, 152 ms max of
        buffering for 24 k -> 8 k); there is no parameter for it, hence the swap.
        """
        await super().set_transport_ready(frame)
        for sender in self._media_senders.values():
            sender._resampler = FirStreamResampler()

    async def stop(self, frame: EndFrame) -> None:
        """Drain audio and end silence, wait for the end mark, hang up, close."""
        await super().stop(frame)
        timeout = self._ws_params.end_mark_timeout_secs
        if timeout > 0 and isinstance(self._ws_params.serializer, TwilioSerializer):
            waiter = self._transport._expect_mark(END_MARK_NAME)
            await self._send_mark(TwilioMarkFrame(mark_name=END_MARK_NAME))
            try:
                await asyncio.wait_for(asyncio.shield(waiter), timeout)
            except TimeoutError:
                logger.debug(f"{self}: no echo of the end mark within {timeout}s")
        await self._write_frame(frame)
        await self._client.disconnect("output")

    async def cancel(self, frame: CancelFrame) -> None:
        """Stop at once, hang up, close."""
        await super().cancel(frame)
        await self._write_frame(frame)
        await self._client.disconnect("output")

    async def cleanup(self) -> None:
        """Leave the client."""
        await super().cleanup()
        await self._client.disconnect("output")
        await self._transport.cleanup()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Send ``clear`` first on interruption; mark reply ends; drop stale audio."""
        if isinstance(frame, InterruptionFrame):
            await self._interrupt()
            self._clearing = True
            try:
                await super().process_frame(frame, direction)
            finally:
                self._clearing = False
            return
        if isinstance(frame, OutputAudioRawFrame) and self._is_stale(frame):
            return
        await super().process_frame(frame, direction)
        if (
            isinstance(frame, TTSStoppedFrame)
            and direction == FrameDirection.DOWNSTREAM
            and self._ws_params.mark_replies
            and isinstance(self._ws_params.serializer, TwilioSerializer)
        ):
            self._reply_count += 1
            await self._handle_frame(TwilioMarkFrame(mark_name=f"reply-{self._reply_count}"))

    async def _interrupt(self) -> None:
        self._stale_before_id = obj_id()
        now = time.monotonic()
        # Twilio holds only what the pacer let ahead of real time: when that has played out
        # and nothing was sent lately, a `clear` would have nothing to clear.
        playing = (
            self._pacer.buffered_secs(now) > 0 or now - self._last_audio_sent_at < CLEAR_MARGIN_SECS
        )
        self._pacer.reset(now)
        if not playing:
            self.clears_skipped += 1
            return
        self._transport._marks_cleared()
        if await self._write_frame(InterruptionFrame()):
            self.clears_sent += 1

    def _is_stale(self, frame: OutputAudioRawFrame) -> bool:
        return frame.interruptible and (self._clearing or frame.id < self._stale_before_id)

    async def send_message(
        self, frame: OutputTransportMessageFrame | OutputTransportMessageUrgentFrame
    ) -> None:
        """Serialize and send a transport message."""
        await self._write_frame(frame)

    async def write_transport_frame(self, frame: Frame) -> None:
        """Send a ``TwilioMarkFrame`` once the audio queued before it has been sent."""
        if isinstance(frame, TwilioMarkFrame):
            await self._send_mark(frame)

    async def _send_mark(self, frame: TwilioMarkFrame) -> None:
        self._transport._mark_sent(frame.mark_name, self.sent_audio_secs)
        await self._write_frame(frame)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        """Send one chunk, then sleep until the pacing clock allows the next."""
        if self._client.is_closing or not self._client.is_connected or self._is_stale(frame):
            return False
        out = OutputAudioRawFrame(
            audio=frame.audio,
            sample_rate=self.sample_rate,
            num_channels=self._params.audio_out_channels,
        )
        serializer = self._ws_params.serializer
        if serializer is None:
            return False
        payload = await serializer.serialize(out)
        # Re-checked after the await, with no await until the bytes are written: an
        # interruption that arrived meanwhile has already sent its clear.
        if self._is_stale(frame) or not payload:
            return False
        if not await self._client.send(payload):
            return False
        self.sent_audio_secs += len(out.audio) / (out.sample_rate * 2 * out.num_channels)
        self._last_audio_sent_at = time.monotonic()
        await asyncio.sleep(self._pacer.next_delay(time.monotonic()))
        return True

    async def _write_frame(self, frame: Frame) -> bool:
        if self._client.is_closing or not self._client.is_connected:
            return False
        if not self._ws_params.serializer:
            return False
        try:
            payload = await self._ws_params.serializer.serialize(frame)
        except Exception as e:
            logger.error(f"{self}: serializing {frame.name} failed: {e.__class__.__name__} ({e})")
            return False
        if not payload:
            return False
        return await self._client.send(payload)


class AiohttpWebsocketTransport(BaseTransport):
    """Pipecat transport around an already-prepared aiohttp ``WebSocketResponse``.

    Args:
        websocket: The prepared socket (the handler has read ``connected``/``start``).
        params: Transport parameters.
        input_name: Optional input processor name.
        output_name: Optional output processor name.
    """

    def __init__(
        self,
        websocket: web.WebSocketResponse,
        params: AiohttpWebsocketParams,
        input_name: str | None = None,
        output_name: str | None = None,
    ) -> None:
        """Create the transport; see the class docstring for the arguments."""
        super().__init__(input_name=input_name, output_name=output_name)
        self._params = params
        self._client = _Client(websocket, params.ws_close_timeout)
        self._input = AiohttpWebsocketInputTransport(
            self, self._client, params, name=self._input_name
        )
        self._output = AiohttpWebsocketOutputTransport(
            self, self._client, params, name=self._output_name
        )
        self._marks: dict[str, _Mark] = {}
        self._mark_waiters: dict[str, asyncio.Future[bool]] = {}
        self.played_audio_secs = 0.0
        self._register_event_handler("on_client_connected")
        self._register_event_handler("on_client_disconnected")
        self._register_event_handler("on_mark")

    def input(self) -> AiohttpWebsocketInputTransport:
        """The input processor."""
        return self._input

    def output(self) -> AiohttpWebsocketOutputTransport:
        """The output processor."""
        return self._output

    @property
    def sent_audio_secs(self) -> float:
        """Seconds of bot audio sent to Twilio so far."""
        return self._output.sent_audio_secs

    def estimated_played_secs(self) -> float:
        """Seconds of bot audio played so far by the pacing clock (Twilio's buffer excluded)."""
        return self._output.sent_audio_secs - self._output.pacer.buffered_secs(time.monotonic())

    async def wait_for_mark(self, name: str, timeout_secs: float) -> bool | None:
        """Wait for the echo of mark ``name``.

        Args:
            name: The mark name (queued with ``TwilioMarkFrame`` or ``reply-<n>``).
            timeout_secs: How long to wait.

        Returns:
            True if played, False if returned by a ``clear``, None on timeout.
        """
        waiter = self._expect_mark(name)
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), timeout_secs)
        except TimeoutError:
            return None

    def _expect_mark(self, name: str) -> asyncio.Future[bool]:
        if name not in self._mark_waiters:
            self._mark_waiters[name] = asyncio.get_running_loop().create_future()
        return self._mark_waiters[name]

    def _mark_sent(self, name: str, audio_secs: float) -> None:
        self._marks[name] = _Mark(audio_secs=audio_secs)

    def _marks_cleared(self) -> None:
        for mark in self._marks.values():
            mark.cleared = True

    async def _mark_echoed(self, name: str) -> None:
        mark = self._marks.pop(name, None)
        if mark is None:
            logger.debug(f"{self}: echo of a mark that was not sent or already echoed")
            return
        played = not mark.cleared
        if played:
            self.played_audio_secs = max(self.played_audio_secs, mark.audio_secs)
        waiter = self._mark_waiters.pop(name, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(played)
        await self._call_event_handler("on_mark", name, played)
