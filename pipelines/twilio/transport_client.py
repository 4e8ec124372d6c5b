"""The pieces of the aiohttp transport that are not Pipecat processors.

* ``AiohttpWebsocketParams``: the transport's parameters (``check_output_params``: what the
  Twilio output refuses).
* ``WebsocketClient``: the socket shared by the input and output processors (send, receive,
  close once when the last user leaves).
* ``MarkBook``: Twilio ``mark`` bookkeeping: which marks were sent after how much audio, which
  were pending when a ``clear`` went out, and who waits for which echo.
* ``OutboundLatency``: the per-call half of the ``bridge_out_ms`` statistic (the server's
  ``BridgeMetrics``): model audio positions in, Twilio audio positions out.
* ``TransportOwner``: what the input and output processors need from the transport that
  owns them (so neither imports ``transport``).
* ``EventHandlers``: the transport's own events and their handlers. Pipecat's ``BaseObject``
  has public ``event_handler``/``add_event_handler`` but keeps declaring and firing events
  private, so the transport keeps this registry behind those public methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import WSCloseCode, WSMessage, web
from loguru import logger
from pipecat.serializers.base_serializer import FrameSerializer
from pipecat.transports.base_transport import TransportParams

from pipelines.ports import LatencyRecorder


class TransportOwner(Protocol):
    """The transport as its input and output processors see it."""

    @property
    def marks(self) -> MarkBook:
        """The call's mark bookkeeping."""

    async def cleanup(self) -> None:
        """Release the transport (idempotent)."""

    async def notify(self, event_name: str, *args: Any) -> None:
        """Fire one of the transport's events (``on_client_connected``, ...)."""

    async def mark_echoed(self, name: str) -> None:
        """Twilio echoed mark ``name``."""


class EventHandlers:
    """A fixed set of events, their handlers, and the tasks running them.

    As in Pipecat's ``BaseObject``: a handler is called as ``handler(owner, *args)``, sync or
    async, each call in a task of its own (so a handler may cancel the pipeline whose receive
    loop fired the event); an exception is logged, not raised; ``wait()`` lets ``cleanup()``
    wait for handlers still running.

    Args:
        owner: Passed to every handler as its first argument (the transport).
        names: The events that exist.
    """

    def __init__(self, owner: object, names: Iterable[str]) -> None:
        """Create the registry; see the class docstring for the arguments."""
        self._owner = owner
        self._handlers: dict[str, list[Callable[..., Any]]] = {name: [] for name in names}
        self._tasks: set[asyncio.Task[None]] = set()

    def add(self, name: str, handler: Callable[..., Any]) -> None:
        """Call ``handler`` on every ``name`` event from now on.

        Raises:
            ValueError: ``name`` is not one of the events.
        """
        handlers = self._handlers.get(name)
        if handlers is None:
            raise ValueError(
                f"{self._owner}: no event {name!r}, expected one of {sorted(self._handlers)}; "
                "fix the event name the handler is registered for"
            )
        handlers.append(handler)

    def remove(self, name: str, handler: Callable[..., Any]) -> None:
        """Stop calling ``handler`` on ``name``; no-op when it was not added."""
        with contextlib.suppress(KeyError, ValueError):
            self._handlers[name].remove(handler)

    def fire(self, name: str, *args: Any) -> None:
        """Start one task per handler of ``name`` (none: nothing happens)."""
        for handler in self._handlers[name]:
            task = asyncio.create_task(self._run(name, handler, args), name=f"{self._owner}:{name}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, name: str, handler: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            result = handler(self._owner, *args)
            if inspect.isawaitable(result):
                await result
        except Exception as e:
            logger.exception(f"{self._owner}: event handler for {name!r} failed: {e!r}")

    async def wait(self) -> None:
        """Wait for the handlers still running, except the one this is called from."""
        current = asyncio.current_task()
        running = [task for task in self._tasks if task is not current]
        if running:
            await asyncio.wait(running)


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
        input_batch_ms: Caller audio is pushed into the pipeline in frames of this many ms
            (Twilio sends 20 ms; 40 halves the frames every processor handles, for at most
            20 ms of added latency on the first half of each frame).
        direct_output: Run the output processor in Pipecat's direct mode: frames are handled
            in the task that pushes them, without two queue-and-task hops per model audio
            frame (the output's own queue and writer task still pace the audio).
        media_timeout_secs: After ``start``, a stream that sends nothing for this long is
            gone (Twilio sends a media message every 20 ms while a call is up): the input
            fires ``on_media_timeout(transport, secs)``. None never does.
    """

    serializer: FrameSerializer | None = None
    ws_close_timeout: float = 0.5
    max_lead_secs: float | None = None
    idle_reset_secs: float = 0.5
    mark_replies: bool = True
    end_mark_timeout_secs: float = 3.0
    input_batch_ms: int = 40
    direct_output: bool = True
    media_timeout_secs: float | None = None


def check_output_params(params: AiohttpWebsocketParams, owner: str) -> None:
    """Refuse output parameters the Twilio output does not support.

    Raises:
        ValueError: A mixer or filter is set, or the output is not one stream at full volume.
    """
    problems = [
        f"{name} is set"
        for name in ("audio_out_mixer", "audio_out_filter")
        if getattr(params, name) is not None
    ]
    if params.audio_out_channels != 1:
        problems.append(f"audio_out_channels is {params.audio_out_channels}")
    if params.audio_out_volume != 1.0:
        problems.append(f"audio_out_volume is {params.audio_out_volume}")
    if problems:
        raise ValueError(
            f"{owner}: {', '.join(problems)}; expected one mono "
            "stream at full volume with no mixer or filter (what Twilio plays). Fix: leave "
            "audio_out_mixer, audio_out_filter, audio_out_channels and audio_out_volume "
            "at their defaults."
        )


class WebsocketClient:
    """The WebSocket shared by input and output: send, receive, close once.

    Args:
        ws: The prepared aiohttp socket.
        close_timeout: Seconds to wait for the close handshake.
    """

    def __init__(self, ws: web.WebSocketResponse, close_timeout: float) -> None:
        """Wrap ``ws``; see the class docstring for the arguments."""
        self.ws = ws
        self._close_timeout = close_timeout
        self._users: set[str] = set()
        self._closing = False
        self._reset_logged = False

    def join(self, user: str) -> None:
        """Register ``user`` ("input"/"output"); the socket closes when all have left."""
        self._users.add(user)

    @property
    def is_connected(self) -> bool:
        """The socket is open."""
        return not self.ws.closed

    @property
    def is_closing(self) -> bool:
        """We started closing it."""
        return self._closing

    def receive(self) -> AsyncIterator[WSMessage]:
        """Iterate incoming messages."""
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


@dataclass
class _Mark:
    audio_secs: float  # bot audio sent before the mark
    cleared: bool = False  # pending when a clear was sent: its echo proves nothing


class MarkBook:
    """Marks sent to Twilio and waiters for their echoes (one per call)."""

    def __init__(self) -> None:
        """Start with no marks."""
        self._marks: dict[str, _Mark] = {}
        self._waiters: dict[str, asyncio.Future[bool]] = {}
        self.played_audio_secs = 0.0

    def expect(self, name: str) -> asyncio.Future[bool]:
        """The future resolved when mark ``name`` is echoed (True: played)."""
        if name not in self._waiters:
            self._waiters[name] = asyncio.get_running_loop().create_future()
        return self._waiters[name]

    def sent(self, name: str, audio_secs: float) -> None:
        """Mark ``name`` was sent after ``audio_secs`` of bot audio."""
        self._marks[name] = _Mark(audio_secs=audio_secs)

    def cleared(self) -> None:
        """A ``clear`` was sent: Twilio returns pending marks without playing their audio."""
        for mark in self._marks.values():
            mark.cleared = True

    def echoed(self, name: str) -> bool | None:
        """Twilio echoed ``name``; returns whether its audio was played (None: unknown mark)."""
        mark = self._marks.pop(name, None)
        if mark is None:
            return None
        played = not mark.cleared
        if played:
            self.played_audio_secs = max(self.played_audio_secs, mark.audio_secs)
        waiter = self._waiters.pop(name, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(played)
        return played


class OutboundLatency:
    """Matches model audio coming in to the Twilio frames carrying it out.

    Positions are seconds of audio since the call started, on both sides (the resampler keeps
    durations). A model frame is "out" when the first Twilio frame reaching its start position
    is written; its latency runs from when it was due: it arrived, or the pacing clock let it go,
    whichever was later.

    Args:
        histogram: Where samples go (the server's ``bridge_out`` histogram).
    """

    def __init__(self, histogram: LatencyRecorder) -> None:
        """Create the tracker; see the class docstring for the arguments."""
        self._hist = histogram
        self._pending: deque[tuple[float, float]] = deque(maxlen=1024)  # (in position, rx time)
        self.in_secs = 0.0
        self.out_secs = 0.0
        self.release_at = 0.0

    def audio_in(self, secs: float, rx_at: float | None) -> None:
        """A model audio frame of ``secs`` reached the output (``rx_at``: when it arrived)."""
        if rx_at is not None:
            self._pending.append((self.in_secs, rx_at))
        self.in_secs += secs

    def audio_out(self, secs: float, now: float) -> None:
        """A Twilio frame of ``secs`` was written at ``now``."""
        self.out_secs += secs
        pending = self._pending
        while pending and pending[0][0] < self.out_secs:
            _pos, rx_at = pending.popleft()
            due = rx_at if rx_at > self.release_at else self.release_at
            self._hist.add_secs(now - due if now > due else 0.0)

    def interrupted(self) -> None:
        """Queued audio is being dropped: start matching afresh."""
        self._pending.clear()
        self.in_secs = self.out_secs
