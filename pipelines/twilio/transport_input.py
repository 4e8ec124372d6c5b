"""The input side of the aiohttp transport: Twilio messages in, frames into the pipeline.

Caller audio is pushed in ``input_batch_ms`` frames (two Twilio 20 ms frames by default), each
stamped in ``frame.metadata[RX_KEY]`` with the arrival time of its first message and in
``frame.metadata[RX_EACH_KEY]`` with the arrival of every message in it, for the
``bridge_in_ms`` statistic (``bot.stats``: one sample per Twilio message).

With a caller route set (``caller_route``: ``pipelines.call.caller_audio``), each batch goes
to it at Twilio's own rate (8 kHz: local VAD runs there, and the route resamples for the
model); without one, batches are resampled to the pipeline's rate and pushed downstream.
Keys the caller presses go to ``dtmf_route`` when one is set (``pipelines.call.dtmf``), else
downstream as ``InputDTMFFrame``.

Twilio ``media`` messages take a fast path (``TwilioSerializer.media_pcm``): no JSON parse and
no frame per 20 ms message; anything else, or anything the fast path is unsure of, goes through
``TwilioSerializer.deserialize`` with its checks and bad-input counters.

Every message passes the call's rate limits first (``input_limits.InputLimits``): messages
beyond ``MESSAGE_RATE_HZ`` and caller audio arriving faster than real time are dropped and
counted (``too_many_messages``, ``audio_too_fast_ms``), never handed on; for a stream that
keeps it up the input logs the reason once, fires ``on_input_abuse(transport, reason)`` (the
call closes the stream 1008) and drops everything that still comes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from aiohttp import WSCloseCode, WSMsgType
from loguru import logger
from pipecat.frames.frames import (
    CancelFrame,
    ClientConnectedFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    InputTransportMessageFrame,
    StartFrame,
    StopFrame,
)
from pipecat.processors.frame_processor import FrameProcessorSetup
from pipecat.transports.base_input import BaseInputTransport

from pipelines.audio.resampling import FirStreamResampler
from pipelines.frame_metadata import RX_EACH_KEY, RX_KEY
from pipelines.twilio.input_limits import InputLimits
from pipelines.twilio.serializer import TwilioMarkEchoFrame, TwilioSerializer, TwilioStopFrame
from pipelines.twilio.transport_client import (
    AiohttpWebsocketParams,
    TransportOwner,
    WebsocketClient,
)


class CallerAudioSink(Protocol):
    """Where caller audio goes instead of down the pipeline (``caller_route``)."""

    async def start(self, push: Callable[[Frame], Awaitable[None]]) -> None:
        """The transport started; frames the sink produces go out through ``push``."""

    async def stop(self) -> None:
        """The transport stopped (may be called more than once)."""

    async def __call__(self, frame: InputAudioRawFrame) -> None:
        """One batch of caller audio at Twilio's rate."""


class AiohttpWebsocketInputTransport(BaseInputTransport):
    """Receives Twilio messages and pushes audio, DTMF and other frames."""

    def __init__(
        self,
        transport: TransportOwner,
        client: WebsocketClient,
        params: AiohttpWebsocketParams,
        **kwargs: object,
    ) -> None:
        """Create the input side; use ``AiohttpWebsocketTransport.input()``."""
        super().__init__(params, **kwargs)
        self._transport = transport
        self._client = client
        self._ws_params = params
        self._receive_task: asyncio.Task[None] | None = None
        self._media_watchdog: asyncio.Task[None] | None = None
        self._last_rx_at = time.monotonic()
        # Made with the call, right after Twilio's `start` was read: the limits run from then.
        self._limits = InputLimits(self._last_rx_at)
        self._refusing = False  # the input broke the limits: everything is dropped
        self._ending = False
        self._pending_audio = b""
        self._pending_at = 0.0
        self._pending_each: tuple[float, ...] = ()
        self._pending_rate = 0
        self._batch_bytes = 0
        self._resampler = FirStreamResampler()
        self._input_paused = False
        # When set, caller audio goes here instead of down the pipeline
        # (pipelines.call.caller_audio).
        self.caller_route: CallerAudioSink | None = None
        # When set, each key the caller presses goes here instead of down the pipeline as an
        # ``InputDTMFFrame`` (pipelines.call.dtmf); it must not wait on the model.
        self.dtmf_route: Callable[[str], Awaitable[None]] | None = None

    async def setup(self, setup: FrameProcessorSetup) -> None:  # type: ignore[override]
        """Join the shared client and set up the serializer."""
        await super().setup(setup)
        self._client.join("input")
        if self._ws_params.serializer:
            await self._ws_params.serializer.setup(setup)

    async def start(self, frame: StartFrame) -> None:
        """Start the caller route, fire ``on_client_connected``, start receiving, get ready."""
        await super().start(frame)
        self._input_paused = False
        if self.caller_route is not None:
            await self.caller_route.start(self.push_frame)
        await self._transport.notify("on_client_connected", self._client.ws)
        await self.push_frame(ClientConnectedFrame())
        if not self._receive_task:
            self._receive_task = self.create_task(self._receive_messages(), "ws-receive")
        timeout = self._ws_params.media_timeout_secs
        if timeout is not None and self._media_watchdog is None:
            self._last_rx_at = time.monotonic()
            self._media_watchdog = self.create_task(self._watch_media(timeout), "media-watchdog")
        await self.set_transport_ready(frame)

    async def stop(self, frame: EndFrame) -> None:
        """Leave the client; keep reading (marks and ``stop`` only) until the output closes.

        The output waits for the echo of its end mark before hanging up, so the receive loop
        must outlive the ``EndFrame``; ``cleanup()`` cancels it.
        """
        await super().stop(frame)
        self._ending = True
        if self.caller_route is not None:
            await self.caller_route.stop()
        await self._client.disconnect("input")

    async def pause(self, frame: StopFrame) -> None:
        """Stop handing on caller audio until the next ``StartFrame``."""
        await super().pause(frame)
        self._input_paused = True

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
        if self.caller_route is not None:
            await self.caller_route.stop()
        if self._media_watchdog:
            await self.cancel_task(self._media_watchdog)
            self._media_watchdog = None
        if self._receive_task:
            await self.cancel_task(self._receive_task)
            self._receive_task = None
        await self._client.disconnect("input")

    async def _watch_media(self, timeout_secs: float) -> None:
        """Fire ``on_media_timeout`` once when nothing arrives for ``timeout_secs``.

        A check every quarter of the timeout (at most every second), not a timer per message.
        """
        step = min(1.0, timeout_secs / 4)
        while True:
            await asyncio.sleep(step)
            quiet = time.monotonic() - self._last_rx_at
            if quiet >= timeout_secs and not self._ending:
                logger.debug(f"{self}: nothing from Twilio for {quiet:.1f} s")
                await self._transport.notify("on_media_timeout", timeout_secs)
                return

    async def _push_audio(self, frame: InputAudioRawFrame, rx_at: float) -> None:
        """Push caller audio in ``input_batch_ms`` frames, stamped with their arrival time."""
        await self._push_pcm(frame.audio, frame.sample_rate, frame.num_channels, rx_at, frame)

    async def _push_pcm(
        self,
        audio: bytes,
        sample_rate: int,
        num_channels: int,
        rx_at: float,
        frame: InputAudioRawFrame | None = None,
    ) -> None:
        """Batch ``audio`` (one Twilio message) into ``input_batch_ms`` frames.

        Without a caller route, audio that arrives at another rate than the pipeline's (the
        serializer may hand over Twilio's 8 kHz) is resampled per batch: one resampler call
        per batch, not per message.
        """
        if not self._batch_bytes:
            ms = self._ws_params.input_batch_ms
            self._batch_bytes = sample_rate * 2 * num_channels * ms // 1000
        if self._pending_audio:
            audio = self._pending_audio + audio
            self._pending_each += (rx_at,)
        elif len(audio) >= self._batch_bytes:
            self._pending_at, self._pending_each = rx_at, (rx_at,)
            if self._resamples(sample_rate):
                await self._push_batch(audio, sample_rate, num_channels)
            else:
                if frame is None:
                    frame = InputAudioRawFrame(audio, sample_rate, num_channels)
                frame.metadata[RX_KEY] = rx_at
                frame.metadata[RX_EACH_KEY] = self._pending_each
                await self.push_audio_frame(frame)
            return
        else:
            self._pending_at, self._pending_each = rx_at, (rx_at,)
        if len(audio) < self._batch_bytes:
            self._pending_audio = audio
            self._pending_rate = sample_rate
            return
        self._pending_audio = b""
        await self._push_batch(audio, sample_rate, num_channels)

    async def push_audio_frame(self, frame: InputAudioRawFrame) -> None:
        """Hand caller audio to ``caller_route``, or push it straight downstream.

        Pipecat's ``BaseInputTransport`` queues each frame for an audio task that only applies
        the optional filter and pushes it on, paying an ``asyncio.wait_for`` task per frame.
        """
        params = self._ws_params
        if params.audio_in_filter is not None or not params.audio_in_passthrough:
            await super().push_audio_frame(frame)
        elif params.audio_in_enabled and not self._input_paused:
            if self.caller_route is not None:
                await self.caller_route(frame)
            else:
                await self.push_frame(frame)

    def _resamples(self, sample_rate: int) -> bool:
        """Whether batches at ``sample_rate`` are resampled here (no route, another rate)."""
        return (
            self.caller_route is None and bool(self.sample_rate) and sample_rate != self.sample_rate
        )

    async def _push_batch(self, audio: bytes, sample_rate: int, num_channels: int) -> None:
        target = self.sample_rate
        if self._resamples(sample_rate) and num_channels == 1:
            audio = await self._resampler.resample(audio, sample_rate, target)
            sample_rate = target
        out = InputAudioRawFrame(audio=audio, sample_rate=sample_rate, num_channels=num_channels)
        out.metadata[RX_KEY] = self._pending_at
        out.metadata[RX_EACH_KEY] = self._pending_each
        await self.push_audio_frame(out)

    async def _flush_audio(self) -> None:
        """Push a partial batch now (before a non-audio frame, to keep the order)."""
        if self._pending_audio:
            audio, self._pending_audio = self._pending_audio, b""
            await self._push_batch(audio, self._pending_rate, 1)

    def _note(self, kind: str, detail: str, amount: int = 1) -> None:
        serializer = self._ws_params.serializer
        if isinstance(serializer, TwilioSerializer):
            serializer.note_bad_input(kind, detail, amount)
        else:
            logger.debug(f"{self}: ignored {kind} ({detail})")

    def _audio_allowed(self, audio: bytes, rate: int, rx_at: float) -> bool:
        """Whether caller audio (16-bit mono PCM at ``rate``) is within the real-time budget."""
        secs = len(audio) / (2 * rate)
        if self._limits.audio(secs, rx_at):
            return True
        self._note("audio_too_fast_ms", "caller audio faster than real time", round(secs * 1000))
        return False

    async def _check_abuse(self) -> None:
        """After a drop: when the drops went beyond bounds, refuse all input from now on."""
        reason = self._limits.abuse()
        if reason is None:
            return
        self._refusing = True
        serializer = self._ws_params.serializer
        sid = serializer.stream_sid if isinstance(serializer, TwilioSerializer) else "?"
        logger.warning(f"Twilio stream {sid}: closing 1008: {reason}")
        await self._transport.notify("on_input_abuse", reason)

    async def _receive_messages(self) -> None:
        serializer = self._ws_params.serializer
        fast = serializer if isinstance(serializer, TwilioSerializer) else None
        limits = self._limits
        limits.credit_backlog(time.monotonic())
        try:
            async for msg in self._client.receive():
                self._last_rx_at = rx_at = time.monotonic()
                if self._refusing and msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    continue
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY) and not limits.message(rx_at):
                    self._note("too_many_messages", "over the message rate limit")
                    await self._check_abuse()
                    continue
                if fast is not None and msg.type == WSMsgType.TEXT:
                    pcm = fast.media_pcm(msg.data)
                    if pcm is not None:
                        if not self._audio_allowed(pcm, fast.twilio_rate, rx_at):
                            await self._check_abuse()
                        elif not self._ending:
                            await self._push_pcm(pcm, fast.twilio_rate, 1, rx_at)
                        continue
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
                    await self._transport.mark_echoed(frame.mark_name)
                elif isinstance(frame, TwilioStopFrame):
                    logger.debug(f"{self}: Twilio sent 'stop'; the call ended")
                    break
                elif self._ending:
                    continue  # the pipeline is ending: nothing more goes downstream
                elif isinstance(frame, InputAudioRawFrame):
                    if self._audio_allowed(frame.audio, frame.sample_rate, rx_at):
                        await self._push_audio(frame, rx_at)
                    else:
                        await self._check_abuse()
                elif isinstance(frame, InputDTMFFrame) and self.dtmf_route is not None:
                    await self.dtmf_route(frame.button.value)
                elif isinstance(frame, InputTransportMessageFrame):
                    await self._flush_audio()
                    await self.broadcast_frame(InputTransportMessageFrame, message=frame.message)
                else:
                    await self._flush_audio()
                    await self.push_frame(frame)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            logger.exception(f"{self}: receive loop failed: {e.__class__.__name__}")
        # Only a disconnect we did not start ourselves is reported.
        if not self._client.is_closing:
            await self._transport.notify("on_client_disconnected", self._client.ws)
