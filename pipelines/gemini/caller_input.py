"""Caller audio on its way to the Live API: audio-stream-end, pre-rolls, activity windows.

``CallerInput`` is the sending half of the call's Gemini service (``service.CallGeminiLive``
hands it each caller frame and the caller's speech turns from local VAD):

- **Hot path.** Each frame goes out as prebuilt JSON text on the raw socket
  (``realtime_input.realtime_audio_message``), skipping the SDK's validation and converters;
  Vertex sessions take the SDK's ``send_realtime_input``. Bridge latency in (one sample per
  Twilio message, ``RX_EACH_KEY``) is recorded here.
- **audioStreamEnd.** After the persona's seconds of caller silence, ``audioStreamEnd`` is sent
  and streaming stops; a rolling ``STREAM_END_PREROLL_SECS`` pre-roll is kept and sent first
  when the caller speaks again, so the speech onset is not lost.
- **Outages.** During a handover or reconnect the connection keeps what is sent (bounded) and
  sends it, in order, once the next connection is ready (``connection``, ``resend``): input
  is not dropped for want of a socket, only before the first connection's history was sent.
- **Server VAD off** (``automaticActivityDetection.disabled``): local VAD drives the turns with
  ``activityStart`` / ``activityEnd``; audio outside a turn is only kept as a pre-roll (sized
  from the VAD's ``start_secs``) sent right after ``activityStart``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

from google.genai.types import ActivityEnd, ActivityStart, Blob
from pipecat.frames.frames import InputAudioRawFrame

from pipelines.frame_metadata import RX_EACH_KEY
from pipelines.gemini.connection import LiveConnection
from pipelines.gemini.realtime_input import realtime_audio_message
from pipelines.ports import BridgeMetrics

# Caller audio kept while the stream is paused after audioStreamEnd, sent first on resume.
STREAM_END_PREROLL_SECS = 0.5
# Server VAD off: audio kept before a local turn starts, until the VAD's start_secs is known.
DEFAULT_TURN_PREROLL_SECS = 0.5
# Added to the VAD's start_secs for that pre-roll (timing slop, a little context).
TURN_PREROLL_MARGIN_SECS = 0.1

SendErrorHandler = Callable[[Exception], Awaitable[None]]


class CallerInput:
    """Sends one call's caller audio and turn signals (see the module docstring).

    Args:
        connection: The call's Live API connection.
        on_send_error: Awaited with the error when a send fails.
        metrics: Where bridge latency in is recorded.
        stream_end_secs: Caller silence before ``audioStreamEnd``; None never sends it.
        server_vad_disabled: The config turns the server's activity detection off.
    """

    def __init__(
        self,
        connection: LiveConnection,
        on_send_error: SendErrorHandler,
        metrics: BridgeMetrics,
        *,
        stream_end_secs: float | None,
        server_vad_disabled: bool,
    ) -> None:
        self._conn = connection
        self._on_send_error = on_send_error
        self._metrics = metrics
        self._stream_end_secs = stream_end_secs
        self._vad_disabled = server_vad_disabled
        self.ready = False  # the session may take realtime input (its history was sent)
        self.user_speaking = False
        self._stream_end_task: asyncio.Task[None] | None = None
        self._paused = False
        self._preroll: deque[bytes] = deque()
        self._preroll_bytes = 0
        self._preroll_rate = 16000
        self._turn_preroll = bytearray()
        self._turn_preroll_rate: int | None = None
        self._turn_preroll_secs = DEFAULT_TURN_PREROLL_SECS

    def set_vad_start_secs(self, start_secs: float) -> None:
        """Size the server-VAD-off pre-roll from the local VAD's ``start_secs``."""
        self._turn_preroll_secs = start_secs + TURN_PREROLL_MARGIN_SECS

    async def audio(self, frame: InputAudioRawFrame) -> None:
        """One frame of caller audio."""
        if self._stream_end_task is None and not self._paused and not self.user_speaking:
            self.schedule_stream_end()  # the caller has not spoken yet
        self._metrics.add_caller_audio_secs(len(frame.audio) / (frame.sample_rate * 2))
        each = frame.metadata.get(RX_EACH_KEY)
        if each is not None:
            now = time.monotonic()
            record = self._metrics.bridge_in.add_secs
            for rx_at in each:
                record(now - rx_at)
        if self._paused:
            self._keep_stream_preroll(frame)
            return
        conn = self._conn
        if not self._can_send():
            return
        if self._vad_disabled and not self.user_speaking:
            self._keep_turn_preroll(frame)
            return
        try:
            if conn.raw_sends:
                await conn.send_json(realtime_audio_message(frame.audio, frame.sample_rate))
            else:
                mime = f"audio/pcm;rate={frame.sample_rate}"
                await conn.send_realtime_input(audio=Blob(data=frame.audio, mime_type=mime))
        except Exception as e:
            await self._on_send_error(e)

    def _can_send(self) -> bool:
        """Caller input may go to the connection: it sends it, or keeps it during an outage.

        Dropped while a live connection's history has not been sent yet (``ready``), and
        before the first connection or after the end (the connection then refuses it).
        """
        conn = self._conn
        return not conn.closing and (self.ready or not conn.live)

    async def user_started(self) -> None:
        """The caller started speaking (local VAD)."""
        self._conn.user_quiet.clear()
        self.cancel_stream_end()
        await self._resume_stream()
        self.user_speaking = True
        if self._vad_disabled and self._can_send():
            try:
                await self._conn.send_realtime_input(activity_start=ActivityStart())
                await self._flush_turn_preroll()  # the onset, inside the activity window
            except Exception as e:
                await self._on_send_error(e)

    async def user_stopped(self) -> None:
        """The caller stopped speaking (local VAD)."""
        self._conn.user_quiet.set()
        self._conn.caller_turn_ended()  # a connection about to go hands over now
        self.schedule_stream_end()
        self.user_speaking = False
        self._turn_preroll = bytearray()
        if self._vad_disabled and self._can_send():
            try:
                await self._conn.send_realtime_input(activity_end=ActivityEnd())
            except Exception as e:
                await self._on_send_error(e)

    # audio-stream-end ------------------------------------------------------------------

    def schedule_stream_end(self) -> None:
        """(Re)start the silence timer that sends ``audioStreamEnd``."""
        if self._stream_end_secs is None or self._paused:
            return
        self.cancel_stream_end()
        self._stream_end_task = asyncio.create_task(self._end_stream_later(), name="stream-end")

    def cancel_stream_end(self) -> None:
        """Stop the silence timer."""
        task, self._stream_end_task = self._stream_end_task, None
        if task is not None and not task.done():
            task.cancel()

    async def _end_stream_later(self) -> None:
        assert self._stream_end_secs is not None
        await asyncio.sleep(self._stream_end_secs)
        if not self._can_send() or self.user_speaking:
            return
        try:
            await self._conn.send_realtime_input(audio_stream_end=True)
        except Exception as e:
            await self._on_send_error(e)
            return
        self._paused = True

    def _keep_stream_preroll(self, frame: InputAudioRawFrame) -> None:
        self._preroll_rate = frame.sample_rate
        self._preroll.append(frame.audio)
        self._preroll_bytes += len(frame.audio)
        limit = int(STREAM_END_PREROLL_SECS * frame.sample_rate * 2 * frame.num_channels)
        while self._preroll_bytes > limit and self._preroll:
            self._preroll_bytes -= len(self._preroll.popleft())

    async def _resume_stream(self) -> None:
        # Caller audio arrives from the transport's task meanwhile: it joins the pre-roll until
        # the pre-roll has been sent, so the model hears the audio in order.
        while self._paused:
            audio = b"".join(self._preroll)
            self._preroll.clear()
            self._preroll_bytes = 0
            if not audio:
                self._paused = False
            elif self._can_send():
                mime = f"audio/pcm;rate={self._preroll_rate}"
                try:
                    await self._conn.send_realtime_input(audio=Blob(data=audio, mime_type=mime))
                except Exception as e:
                    self._paused = False
                    await self._on_send_error(e)
            else:
                self._paused = False  # no session: nothing to resume on

    # server VAD off: the turn pre-roll ---------------------------------------------------

    def _keep_turn_preroll(self, frame: InputAudioRawFrame) -> None:
        self._turn_preroll.extend(frame.audio)
        keep = int(frame.sample_rate * frame.num_channels * 2 * self._turn_preroll_secs)
        if len(self._turn_preroll) > keep:
            del self._turn_preroll[:-keep]
        self._turn_preroll_rate = frame.sample_rate

    async def _flush_turn_preroll(self) -> None:
        if not self._turn_preroll or self._turn_preroll_rate is None:
            return
        audio = bytes(self._turn_preroll)
        self._turn_preroll = bytearray()
        mime = f"audio/pcm;rate={self._turn_preroll_rate}"
        await self._conn.send_realtime_input(audio=Blob(data=audio, mime_type=mime))

    def close(self) -> None:
        """Stop the timers."""
        self.cancel_stream_end()
