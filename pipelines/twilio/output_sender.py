"""What the output writes on the Twilio socket: paced media chunks, ``clear``, marks, hang-up.

``TwilioSender`` is the socket side of the output processor (``transport_output``): it
serializes and sends, and keeps what hangs on what was sent: the pacing clock (``Pacer``),
seconds of audio sent, bridge latency out (``OutboundLatency``), marks sent (the transport's
``MarkBook``; the end mark and its echo), and whether a ``clear`` has anything to clear. It
owns no task and no queue; the output's writer calls it, one chunk at a time.
``WriteWatchdog`` ends a write that never returns (a peer that stopped reading) without a
timer per chunk.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from loguru import logger
from pipecat.frames.frames import Frame, InterruptionFrame, OutputAudioRawFrame
from pipecat.serializers.base_serializer import FrameSerializer

from pipelines.ports import CallMetrics
from pipelines.twilio.pacing import Pacer
from pipelines.twilio.serializer import TwilioMarkFrame, TwilioSerializer
from pipelines.twilio.transport_client import OutboundLatency, TransportOwner, WebsocketClient

# After the last chunk was sent, how long Twilio may still be playing (network and jitter).
CLEAR_MARGIN_SECS = 0.25
END_MARK_NAME = "call-end"


class TwilioSender:
    """Sends paced audio chunks, ``clear`` and marks; keeps the books on what was sent.

    Args:
        transport: The transport (its ``marks``).
        client: The socket.
        serializer: The stream's serializer (``TwilioSerializer`` for the media fast path).
        metrics: Where bridge latency, audio seconds, bot audio sent and ``clear`` go.
    """

    def __init__(
        self,
        transport: TransportOwner,
        client: WebsocketClient,
        serializer: FrameSerializer | None,
        metrics: CallMetrics,
    ) -> None:
        """Create the sender; ``configure`` it once the output rate is known."""
        self._transport = transport
        self._client = client
        self._serializer = serializer
        self.twilio = serializer if isinstance(serializer, TwilioSerializer) else None
        self._metrics = metrics
        self.latency = OutboundLatency(metrics.bridge_out)
        self.pacer = Pacer(0.04)
        self.sample_rate = 8000
        self._fast = self.twilio is not None
        self.sent_audio_secs = 0.0
        self.clears_sent = 0
        self.clears_skipped = 0
        self._last_audio_sent_at = float("-inf")
        self._last_clear_at = float("-inf")

    def configure(
        self, sample_rate: int, chunk_secs: float, max_lead_secs: float | None, idle_reset: float
    ) -> None:
        """Set the output rate and the pacing clock (chunk length, lead, idle restart)."""
        self.sample_rate = sample_rate
        self._fast = self.twilio is not None and sample_rate == self.twilio.twilio_rate
        self.pacer = Pacer(chunk_secs, max_lead_secs=max_lead_secs, idle_reset_secs=idle_reset)

    async def send_audio(self, audio: bytes | memoryview, stale: Callable[[], bool]) -> bool:
        """Send one chunk of output-rate PCM, then sleep until the next chunk may go.

        Args:
            audio: The chunk.
            stale: True when the chunk must not go (an interruption came); checked after the
                last await before the bytes are written.

        Returns:
            Whether it was sent.
        """
        client = self._client
        if client.is_closing or not client.is_connected or stale():
            return False
        if self._fast:
            payload: str | bytes | None = self.twilio.media_message(audio)  # type: ignore[union-attr,arg-type]
        elif self._serializer is not None:
            out = OutputAudioRawFrame(bytes(audio), self.sample_rate, 1)
            payload = await self._serializer.serialize(out)
            if stale():  # an interruption that came meanwhile has already sent its clear
                return False
        else:
            return False
        if not payload or not await client.send(payload):
            return False
        secs = len(audio) / (self.sample_rate * 2)
        self.sent_audio_secs += secs
        self._metrics.add_twilio_audio_secs(secs)
        self._metrics.bot_audio_sent()
        now = time.monotonic()
        self._last_audio_sent_at = now
        self.latency.audio_out(secs, now)
        delay = self.pacer.next_delay(now)
        self.latency.release_at = now + delay
        await asyncio.sleep(delay)
        return True

    async def clear(self) -> None:
        """A barge-in: send ``clear`` when Twilio may still be playing; stop the pacing clock."""
        now = time.monotonic()
        self.latency.interrupted()
        # Twilio holds only what the pacer let ahead of real time: when that has played out
        # and nothing was sent lately, a `clear` would have nothing to clear. Nor would a
        # second one when no audio went out since the last (local VAD and the model's
        # `interrupted` usually both report the same barge-in).
        playing = (
            self.pacer.buffered_secs(now) > 0 or now - self._last_audio_sent_at < CLEAR_MARGIN_SECS
        ) and self._last_audio_sent_at > self._last_clear_at
        self.pacer.reset(now)
        if not playing:
            self.clears_skipped += 1
            self._metrics.clear_done(False)
            return
        self._transport.marks.cleared()
        sent = await self.write_frame(InterruptionFrame())
        if sent:
            self.clears_sent += 1
            self._last_clear_at = now
        self._metrics.clear_done(sent)

    async def mark(self, frame: TwilioMarkFrame) -> bool:
        """Send a mark, noting how much audio went before it; whether it was sent."""
        self._transport.marks.sent(frame.mark_name, self.sent_audio_secs)
        return await self.write_frame(frame)

    async def end_mark(self, timeout_secs: float) -> None:
        """Send the end mark and wait for its echo (the goodbye was played), at most this long.

        Nothing is sent with ``timeout_secs`` 0 or a serializer other than Twilio's.
        """
        if timeout_secs <= 0 or self.twilio is None:
            return
        waiter = self._transport.marks.expect(END_MARK_NAME)
        sent = await self.mark(TwilioMarkFrame(mark_name=END_MARK_NAME))
        try:
            if sent:  # else the socket is gone: nothing will come back
                await asyncio.wait_for(asyncio.shield(waiter), timeout_secs)
        except TimeoutError:
            logger.debug(f"Twilio output: no echo of the end mark within {timeout_secs}s")

    async def write_frame(self, frame: Frame) -> bool:
        """Serialize ``frame`` and send it; whether anything was sent (errors are logged)."""
        if self._client.is_closing or not self._client.is_connected or not self._serializer:
            return False
        try:
            payload = await self._serializer.serialize(frame)
        except Exception as e:
            logger.error(
                f"Twilio output: serializing {frame.name} failed: {e.__class__.__name__} ({e})"
            )
            return False
        if not payload:
            return False
        return await self._client.send(payload)


class WriteWatchdog:
    """Cancels a write that has not returned within ``timeout_secs`` (a peer that stopped reading).

    Pipecat wraps every chunk's write in ``wait_for``; a timeout scope per chunk still costs a
    timer and a heap entry 25 times a second per call. Here each write notes when it started
    (``watch``, re-timed per chunk by ``lap``) and one task looks a few times per timeout.

    Args:
        timeout_secs: How long one chunk's write may take.
    """

    CHECKS = 4  # looks per timeout

    def __init__(self, timeout_secs: float) -> None:
        """Create a stopped watchdog; see the class docstring for the arguments."""
        self.timeout_secs = timeout_secs
        self._started_at: float | None = None
        self._task: asyncio.Task[object] | None = None
        self._timed_out = False
        self._looker: asyncio.Task[None] | None = None

    def start(self, name: str) -> None:
        """Start looking (idempotent)."""
        if self._looker is None:
            self._looker = asyncio.get_running_loop().create_task(self._look(), name=name)

    def stop(self) -> None:
        """Stop looking (idempotent)."""
        if self._looker is not None:
            self._looker.cancel()
            self._looker = None

    def lap(self) -> None:
        """The write in progress goes on to its next chunk: time that one afresh."""
        if self._started_at is not None:
            self._started_at = time.monotonic()

    async def watch(self, write: Awaitable[bool]) -> bool | None:
        """Await ``write``; None when the watchdog cancelled it (the timeout passed)."""
        task = asyncio.current_task()
        self._started_at, self._task = time.monotonic(), task
        try:
            return await write
        except asyncio.CancelledError:
            if not self._timed_out or task is None or task.uncancel() > 0:
                raise
            return None
        finally:
            self._started_at, self._task = None, None
            self._timed_out = False

    async def _look(self) -> None:
        while True:
            await asyncio.sleep(self.timeout_secs / self.CHECKS)
            started, task = self._started_at, self._task
            if started is not None and task is not None:
                if time.monotonic() - started > self.timeout_secs:
                    self._timed_out = True
                    task.cancel()
