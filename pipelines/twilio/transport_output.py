"""The output side of the aiohttp transport: paced bot audio, ``clear``, marks, hang-up.

* Pacing runs on absolute deadlines with catch-up and a bounded lead (``pipelines.twilio.pacing``).
* Barge-in: on ``InterruptionFrame`` the ``clear`` is sent first, then no audio of the
  interrupted reply leaves after it (audio created before the interruption is dropped in
  ``write_audio_frame`` and while the MediaSender's queue is being reset).
* Bot audio waits in the MediaSender's queue as one frame per run (``output_queue``) and is
  written as paced chunks; a watchdog ends the call on a write that never returns.
* Twilio marks: ``TwilioMarkFrame`` is sent after the audio queued before it; a mark is sent
  after each reply (``TTSStoppedFrame``) and before hanging up.
"""

from __future__ import annotations

import asyncio
import time

from loguru import logger
from pipecat.frames.frames import (
    BotSpeakingFrame,
    CancelFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
    StartFrame,
    TTSStoppedFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessorSetup
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.utils.utils import obj_id

from pipelines.audio.resampling import FirStreamResampler
from pipelines.frame_metadata import RX_KEY
from pipelines.ports import NO_METRICS, BridgeMetrics
from pipelines.twilio import output_queue
from pipelines.twilio.pacing import Pacer
from pipelines.twilio.serializer import TwilioMarkFrame, TwilioSerializer
from pipelines.twilio.transport_client import (
    AiohttpWebsocketParams,
    OutboundLatency,
    TransportOwner,
    WebsocketClient,
)

END_MARK_NAME = "call-end"
# How often per write timeout the watchdog looks for a write that has not returned.
WATCHDOG_CHECKS = 4
# After the last chunk was sent, how long Twilio may still be playing (network and jitter).
CLEAR_MARGIN_SECS = 0.25


class AiohttpWebsocketOutputTransport(BaseOutputTransport):
    """Sends paced audio, ``clear`` on interruption, marks, and hangs up at the end."""

    def __init__(
        self,
        transport: TransportOwner,
        client: WebsocketClient,
        params: AiohttpWebsocketParams,
        metrics: BridgeMetrics = NO_METRICS,
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
        self._last_clear_at = float("-inf")
        self._bridge_metrics = metrics
        self._latency = OutboundLatency(metrics.bridge_out)
        self._write_started_at: float | None = None
        self._write_task: asyncio.Task[object] | None = None
        self._write_timed_out = False
        self._watchdog: asyncio.Task[None] | None = None

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
            output_queue.install(sender)
            sender._resampler = FirStreamResampler()
            sender._internal_write_audio_frame = self._write_with_timeout  # type: ignore[method-assign]
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().create_task(
                self._write_watchdog(), name=f"{self}::write-watchdog"
            )

    async def _write_with_timeout(self, frame: OutputAudioRawFrame) -> bool:
        """The MediaSender's write, watched for a peer that stopped reading.

        Pipecat wraps every chunk's write in ``wait_for`` (a task per chunk); a timeout scope
        per chunk still costs a timer and a heap entry 25 times a second per call. Instead
        each write notes when it started, and ``_write_watchdog`` (a few checks per timeout)
        cancels a write that has not returned: it ends the call as Pipecat does.
        """
        if not self.is_usable:
            return False
        task = asyncio.current_task()
        self._write_started_at, self._write_task = time.monotonic(), task
        try:
            return await self.write_audio_frame(frame)
        except asyncio.CancelledError:
            if not self._write_timed_out or task is None or task.uncancel() > 0:
                raise
            timeout = self._params.audio_out_write_timeout_secs
            await self.push_error(
                f"{self} timed out after {timeout}s writing audio to the transport; "
                "the peer has stopped reading",
                exception=TimeoutError(),
                force_treat_as_permanent=True,
            )
            return False
        finally:
            self._write_started_at, self._write_task = None, None
            self._write_timed_out = False

    async def _write_watchdog(self) -> None:
        while True:
            timeout = self._params.audio_out_write_timeout_secs
            await asyncio.sleep(timeout / WATCHDOG_CHECKS)
            started, task = self._write_started_at, self._write_task
            if started is not None and task is not None and time.monotonic() - started > timeout:
                self._write_timed_out = True
                task.cancel()

    def _stop_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    async def push_frame(
        self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM
    ) -> None:
        """Keep sent audio chunks and ``BotSpeakingFrame`` out of the pipeline.

        Nothing after the output uses sent chunks (25 frames/s). ``BotSpeakingFrame`` (every
        0.2 s while the bot talks, both ways, ~5 queue hops each) only feeds Pipecat's worker
        idle timeout and user-idle controller, both off here (``CallControl`` keeps the limits).
        """
        if isinstance(frame, BotSpeakingFrame):
            return
        if direction == FrameDirection.DOWNSTREAM and isinstance(frame, OutputAudioRawFrame):
            return
        await super().push_frame(frame, direction)

    async def stop(self, frame: EndFrame) -> None:
        """Drain audio and end silence, wait for the end mark, hang up, close."""
        await super().stop(frame)
        timeout = self._ws_params.end_mark_timeout_secs
        if timeout > 0 and isinstance(self._ws_params.serializer, TwilioSerializer):
            waiter = self._transport.marks.expect(END_MARK_NAME)
            await self._send_mark(TwilioMarkFrame(mark_name=END_MARK_NAME))
            try:
                await asyncio.wait_for(asyncio.shield(waiter), timeout)
            except TimeoutError:
                logger.debug(f"{self}: no echo of the end mark within {timeout}s")
        self._stop_watchdog()
        await self._write_frame(frame)
        await self._client.disconnect("output")

    async def cancel(self, frame: CancelFrame) -> None:
        """Stop at once, hang up, close."""
        self._stop_watchdog()
        await super().cancel(frame)
        await self._write_frame(frame)
        await self._client.disconnect("output")

    async def cleanup(self) -> None:
        """Leave the client."""
        self._stop_watchdog()
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
        if isinstance(frame, OutputAudioRawFrame):
            if self._is_stale(frame):
                return
            secs = len(frame.audio) / (frame.sample_rate * 2 * frame.num_channels)
            self._latency.audio_in(secs, frame.metadata.get(RX_KEY))
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
        self._latency.interrupted()
        now = time.monotonic()
        # Twilio holds only what the pacer let ahead of real time: when that has played out
        # and nothing was sent lately, a `clear` would have nothing to clear. Nor would a
        # second one when no audio went out since the last (local VAD and the model's
        # `interrupted` usually both report the same barge-in).
        playing = (
            self._pacer.buffered_secs(now) > 0 or now - self._last_audio_sent_at < CLEAR_MARGIN_SECS
        ) and self._last_audio_sent_at > self._last_clear_at
        self._pacer.reset(now)
        if not playing:
            self.clears_skipped += 1
            return
        self._transport.marks.cleared()
        if await self._write_frame(InterruptionFrame()):
            self.clears_sent += 1
            self._last_clear_at = now

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
        self._transport.marks.sent(frame.mark_name, self.sent_audio_secs)
        await self._write_frame(frame)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        """Send ``frame`` as paced chunks (``output_queue`` queues one frame per run of audio).

        Each chunk is sent, then the pacing clock sleeps until the next may go; an
        interruption stops the rest of the frame.
        """
        audio, step = frame.audio, self.audio_chunk_size
        if len(audio) <= step:
            return await self._send_chunk(frame, audio)
        for offset in range(0, len(audio), step):
            if offset and self._write_started_at is not None:
                self._write_started_at = time.monotonic()  # the watchdog times each chunk
            if not await self._send_chunk(frame, audio[offset : offset + step]):
                return False
        return True

    async def _send_chunk(self, frame: OutputAudioRawFrame, audio: bytes | bytearray) -> bool:
        if self._client.is_closing or not self._client.is_connected or self._is_stale(frame):
            return False
        serializer = self._ws_params.serializer
        if serializer is None:
            return False
        if isinstance(serializer, TwilioSerializer) and self.sample_rate == serializer.twilio_rate:
            payload: str | bytes | None = serializer.media_message(audio)
        else:
            out = OutputAudioRawFrame(
                audio=bytes(audio),
                sample_rate=self.sample_rate,
                num_channels=self._params.audio_out_channels,
            )
            payload = await serializer.serialize(out)
        # Re-checked after the await, with no await until the bytes are written: an
        # interruption that arrived meanwhile has already sent its clear.
        if self._is_stale(frame) or not payload:
            return False
        if not await self._client.send(payload):
            return False
        secs = len(audio) / (self.sample_rate * 2 * self._params.audio_out_channels)
        self.sent_audio_secs += secs
        self._bridge_metrics.add_twilio_audio_secs(secs)
        now = time.monotonic()
        self._last_audio_sent_at = now
        self._latency.audio_out(secs, now)
        delay = self._pacer.next_delay(now)
        self._latency.release_at = now + delay
        await asyncio.sleep(delay)
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
