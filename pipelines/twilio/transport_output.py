"""The output side of the aiohttp transport: paced bot audio, ``clear``, marks, hang-up.

A ``FrameProcessor`` of our own where Pipecat's ``BaseOutputTransport`` would be: Pipecat's
output only takes a resampler, a queue or a writer of ours through private ``MediaSender``
members, so the call's audio path is built here on public seams (``FrameProcessor``, the
``FrameSerializer``, public frames), and does what the call needs:

* Model audio (24 kHz) goes through one ``FirStreamResampler`` to the output rate (8 kHz), which
  is flushed at the end of each reply (``TTSStoppedFrame``: no clipped word endings, Pipecat
  #5769), then waits in ``OutputQueue`` (one frame per run of audio) for the writer task, which
  sends it as paced chunks (``Pacer``: real time, at most ``max_lead_secs`` ahead of playout,
  catching up after a stall) through the serializer's ``media_message``.
* Other downstream frames (``TTSStoppedFrame``, transcripts, ``TwilioMarkFrame``) are handled by
  the writer after the audio queued before them, then pushed on; a mark ``reply-<n>`` follows
  every reply. System frames and upstream frames pass at once.
* Barge-in: on ``InterruptionFrame`` the queue drops its interruptible entries, Twilio gets
  ``clear`` at once (skipped when nothing is playing), and no audio of the interrupted reply
  leaves after it (``barge_in``).
* ``BotStartedSpeakingFrame``/``BotStoppedSpeakingFrame`` go both ways as Pipecat's output
  sends them (``bot_speaking``).
* ``EndFrame``: the queue drains, ``audio_out_end_silence_secs`` of silence, the end mark is
  sent and its echo awaited (bounded, ``TwilioSender.end_mark``), then the serializer hangs up
  and the socket closes. ``CancelFrame`` stops at once.
* A write that never returns is cancelled (``WriteWatchdog``) and reported as a permanent error,
  as Pipecat's timeout per chunk does.
"""

from __future__ import annotations

import asyncio
import functools

from loguru import logger
from pipecat.audio.dtmf.utils import load_dtmf_audio
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputDTMFFrame,
    OutputDTMFUrgentFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
    OutputTransportReadyFrame,
    SpeechOutputAudioRawFrame,
    StartFrame,
    SystemFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor, FrameProcessorSetup

from pipelines.audio.resampling import FirStreamResampler
from pipelines.frame_metadata import RX_KEY
from pipelines.ports import NO_CALL_METRICS, CallMetrics
from pipelines.twilio.barge_in import InterruptedAudio
from pipelines.twilio.bot_speaking import BOT_STOP_FALLBACK_SECS, BotSpeaking
from pipelines.twilio.output_queue import OutputQueue
from pipelines.twilio.output_sender import TwilioSender, WriteWatchdog
from pipelines.twilio.pacing import Pacer
from pipelines.twilio.serializer import TwilioMarkFrame
from pipelines.twilio.transport_client import (
    AiohttpWebsocketParams,
    TransportOwner,
    WebsocketClient,
    check_output_params,
)

# The writer's "drained" marker in the queue (an EndFrame of our own, never pushed); an
# interruption must not drop it.
_DRAINED = EndFrame()
_DRAINED.interruptible = False


class AiohttpWebsocketOutputTransport(FrameProcessor):
    """Sends paced audio, ``clear`` on interruption, marks, and hangs up at the end.

    Args:
        transport: The transport that owns it (marks, events, cleanup).
        client: The socket shared with the input.
        params: Transport parameters (``audio_out_*``, serializer, pacing, marks).
        metrics: Where bridge latency, audio seconds and the call's output events go.
        **kwargs: ``FrameProcessor`` arguments (``name``, ``enable_direct_mode``).
    """

    def __init__(
        self,
        transport: TransportOwner,
        client: WebsocketClient,
        params: AiohttpWebsocketParams,
        metrics: CallMetrics = NO_CALL_METRICS,
        **kwargs: object,
    ) -> None:
        """Create the output side; use ``AiohttpWebsocketTransport.output()``."""
        check_output_params(params, "AiohttpWebsocketOutputTransport")
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._transport = transport
        self._client = client
        self._params = params
        self._sender = TwilioSender(transport, client, params.serializer, metrics)
        self._sample_rate = 0
        self._chunk_bytes = 0
        self._queue = OutputQueue(8000, 320)
        self._resampler = FirStreamResampler()
        self._cut = InterruptedAudio()
        self._reply_count = 0
        self._bot = BotSpeaking(self.broadcast_frame, str(self))
        self._latency = self._sender.latency
        self._writer: asyncio.Task[None] | None = None
        self._watchdog = WriteWatchdog(params.audio_out_write_timeout_secs)

    @property
    def pacer(self) -> Pacer:
        """The pacing clock (for playout estimates)."""
        return self._sender.pacer

    @property
    def sent_audio_secs(self) -> float:
        """Seconds of bot audio sent to Twilio so far."""
        return self._sender.sent_audio_secs

    @property
    def clears_sent(self) -> int:
        """``clear`` messages sent (barge-ins while Twilio was playing)."""
        return self._sender.clears_sent

    @property
    def clears_skipped(self) -> int:
        """Interruptions that needed no ``clear`` (nothing was playing)."""
        return self._sender.clears_skipped

    @property
    def sample_rate(self) -> int:
        """The output sample rate (Hz), known after setup."""
        return self._sample_rate

    @property
    def audio_chunk_size(self) -> int:
        """Bytes of one output chunk (``audio_out_10ms_chunks`` x 10 ms), known after setup."""
        return self._chunk_bytes

    async def setup(self, setup: FrameProcessorSetup) -> None:  # type: ignore[override]
        """Size chunks and the pacing clock from the output rate; set up the serializer."""
        await super().setup(setup)
        params = self._params
        self._sample_rate = params.audio_out_sample_rate or setup.audio_out_sample_rate
        self._chunk_bytes = self._sample_rate // 100 * 2 * params.audio_out_10ms_chunks
        self._queue = OutputQueue(self._sample_rate, self._chunk_bytes)
        self._sender.configure(
            self._sample_rate,
            self._chunk_bytes / (self._sample_rate * 2),
            params.max_lead_secs,
            params.idle_reset_secs,
        )
        self._client.join("output")
        if params.serializer:
            await params.serializer.setup(setup)

    async def cleanup(self) -> None:
        """Stop the writer, leave the client, release the transport."""
        await self._stop_tasks()
        await super().cleanup()
        await self._client.disconnect("output")
        await self._transport.cleanup()

    # frames in ---------------------------------------------------------------------------

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Route a frame: audio and in-order frames to the queue, the rest on at once."""
        await super().process_frame(frame, direction)
        if isinstance(frame, OutputAudioRawFrame) and direction == FrameDirection.DOWNSTREAM:
            await self._audio_in(frame)
        elif isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            self._start()
            await self.push_frame(OutputTransportReadyFrame(), FrameDirection.UPSTREAM)
        elif isinstance(frame, EndFrame):
            await self._stop(frame)
            await self.push_frame(frame, direction)
        elif isinstance(frame, CancelFrame):
            await self._cancel(frame)
            await self.push_frame(frame, direction)
        elif isinstance(frame, InterruptionFrame):
            await self._interrupt(frame, direction)
        elif isinstance(frame, OutputTransportMessageUrgentFrame):
            await self.send_message(frame)
        elif isinstance(frame, OutputDTMFUrgentFrame):
            await self._write_dtmf(frame)
        elif isinstance(frame, SystemFrame) or direction == FrameDirection.UPSTREAM:
            await self.push_frame(frame, direction)
        elif isinstance(frame, TTSStoppedFrame):
            await self._flush_reply()
            self._queue.put(frame)
            if self._params.mark_replies and self._sender.twilio is not None:
                self._reply_count += 1
                self._queue.put(TwilioMarkFrame(mark_name=f"reply-{self._reply_count}"))
        else:
            self._queue.put(frame)

    async def _audio_in(self, frame: OutputAudioRawFrame) -> None:
        if not self._params.audio_out_enabled:
            return
        if self._cut.dropped_on_arrival(frame):
            return
        secs = len(frame.audio) / (frame.sample_rate * 2 * frame.num_channels)
        self._latency.audio_in(secs, frame.metadata.get(RX_KEY))
        audio = await self._resampler.resample(frame.audio, frame.sample_rate, self._sample_rate)
        self._queue.put_audio(audio, type(frame), frame.interruptible)

    async def _flush_reply(self) -> None:
        """The end of a reply: the resampler's tail and the last partial chunk go out."""
        self._queue.end_run(await self._resampler.flush())

    # lifecycle -----------------------------------------------------------------------------

    def _start(self) -> None:
        if self._writer is None:
            self._writer = self.create_task(self._write_loop(), name=f"{self}::writer")
        self._watchdog.start(f"{self}::write-watchdog")

    async def _stop(self, frame: EndFrame) -> None:
        """Drain audio and end silence, wait for the end mark, hang up, close."""
        await self._flush_reply()
        writer = self._writer
        if writer is not None and not writer.done():
            self._queue.put(_DRAINED)
            await asyncio.wait({writer})
        await self._sender.end_mark(self._params.end_mark_timeout_secs)
        await self._stop_tasks()
        await self._sender.write_frame(frame)
        await self._client.disconnect("output")

    async def _cancel(self, frame: CancelFrame) -> None:
        """Stop at once, hang up, close."""
        await self._stop_tasks()
        await self._sender.write_frame(frame)
        await self._client.disconnect("output")

    async def _stop_tasks(self) -> None:
        self._watchdog.stop()
        writer, self._writer = self._writer, None
        if writer is not None and not writer.done() and writer is not asyncio.current_task():
            await self.cancel_task(writer)

    # the writer ----------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        queue = self._queue
        while True:
            frame = queue.get_nowait()
            if frame is None:
                if not self._bot.speaking:
                    frame = await queue.get()
                else:
                    try:
                        async with asyncio.timeout(BOT_STOP_FALLBACK_SECS):
                            frame = await queue.get()
                    except TimeoutError:
                        await self._bot.stopped()
                        continue
            if frame is _DRAINED:
                await self._write_end_silence()
                return
            try:
                if isinstance(frame, OutputAudioRawFrame):
                    await self._play(frame)
                else:
                    await self._handle_in_order(frame)
            except Exception as e:  # one bad frame must not silence the rest of the call
                logger.error(
                    f"{self}: writing {frame.name} failed: {e.__class__.__name__} ({e}); "
                    "going on with the next frame"
                )

    async def _play(self, frame: OutputAudioRawFrame) -> None:
        # Taken from the queue with no await since: an interruption from here on stops it.
        self._cut.writing(frame)
        try:
            if isinstance(frame, TTSAudioRawFrame | SpeechOutputAudioRawFrame):
                self._bot.tts_audio_received = True
                await self._bot.started()
            await self._write_with_timeout(frame)
        finally:
            self._cut.writing(None)

    async def _handle_in_order(self, frame: Frame) -> None:
        if isinstance(frame, TTSStoppedFrame):
            if self._bot.tts_audio_received:
                await self._bot.stopped()
        elif isinstance(frame, TwilioMarkFrame):
            await self._sender.mark(frame)
        elif isinstance(frame, OutputTransportMessageFrame):
            await self.send_message(frame)
        elif isinstance(frame, OutputDTMFFrame):
            await self._write_dtmf(frame)
        await self.push_frame(frame)

    async def _write_end_silence(self) -> None:
        secs = self._params.audio_out_end_silence_secs
        if secs > 0:
            await self._write_own(bytes(self._sample_rate * 2 * secs))

    async def _write_dtmf(self, frame: OutputDTMFFrame | OutputDTMFUrgentFrame) -> None:
        for button in frame.buttons or ():
            await self._write_own(await load_dtmf_audio(button, sample_rate=self._sample_rate))

    async def _write_own(self, audio: bytes) -> None:
        """Write audio the output makes itself (end silence, DTMF tones), whole."""
        frame = OutputAudioRawFrame(audio, self._sample_rate, 1)
        frame.interruptible = False  # not part of a reply: a barge-in does not cut it
        await self._write_with_timeout(frame)

    async def _write_with_timeout(self, frame: OutputAudioRawFrame) -> bool:
        """``write_audio_frame`` under the watchdog: a write that never returns ends the call.

        The output becomes unusable (a permanent error), as with Pipecat's timeout per chunk.
        """
        if not self.is_usable:
            return False
        done = await self._watchdog.watch(self.write_audio_frame(frame))
        if done is not None:
            return done
        await self.push_error(
            f"{self} timed out after {self._watchdog.timeout_secs}s writing audio to the "
            "transport; the peer has stopped reading",
            exception=TimeoutError(),
            force_treat_as_permanent=True,
        )
        return False

    # barge-in ------------------------------------------------------------------------------

    async def _interrupt(self, frame: InterruptionFrame, direction: FrameDirection) -> None:
        # Before any await: queued interruptible audio is gone and the run being written stops
        # at its next chunk.
        writing_kept = self._cut.interrupted()
        audio_left = self._queue.drop_interruptible() or writing_kept
        if not audio_left:
            await self._resampler.reset()  # the rest of the interrupted stream is not wanted
        self._cut.clearing = True
        try:
            await self._sender.clear()
            await self.push_frame(frame, direction)
            if not audio_left:
                await self._bot.stopped()
        finally:
            self._cut.clearing = False

    # frames out ----------------------------------------------------------------------------

    async def send_message(
        self, frame: OutputTransportMessageFrame | OutputTransportMessageUrgentFrame
    ) -> None:
        """Serialize and send a transport message."""
        await self._sender.write_frame(frame)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        """Send ``frame`` (output-rate audio, whole chunks) as paced chunks.

        Each chunk is sent, then the pacing clock sleeps until the next may go; an
        interruption stops the rest of an interruptible frame.

        Returns:
            Whether all of it was sent.
        """
        audio, step = frame.audio, self._chunk_bytes
        stale = functools.partial(self._cut.is_stale, frame)
        send = self._sender.send_audio
        if len(audio) <= step:
            return await send(audio, stale)
        view = memoryview(audio)
        try:
            for offset in range(0, len(audio), step):
                if offset:
                    self._watchdog.lap()  # the watchdog times each chunk
                if not await send(view[offset : offset + step], stale):
                    return False
            return True
        finally:
            view.release()
