"""Pipecat transport over an already-prepared aiohttp ``WebSocketResponse`` (Twilio Media Streams).

Mirrors Pipecat's ``FastAPIWebsocketTransport`` with four differences:

* Pacing runs on absolute deadlines with catch-up and a bounded lead (``pipelines.twilio.pacing``).
* Barge-in: on ``InterruptionFrame`` the ``clear`` is sent first, then no audio of the
  interrupted reply leaves after it (the output's queue drops it, its writer checks before
  every chunk, and audio created before the interruption is dropped on arrival).
* Twilio marks: ``TwilioMarkFrame`` is sent after the audio queued before it; a mark is sent
  after each reply (``TTSStoppedFrame``) and before hanging up; echoes fire
  ``on_mark(transport, name, played)``, where ``played`` is False for marks Twilio returned
  because of a ``clear``.
* Twilio ``stop`` ends the receive loop (``on_client_disconnected``), like the peer closing.

Split over ``transport_client`` (params, socket, marks, latency bookkeeping),
``transport_input`` (receive loop, input batching), ``transport_output`` (pacing, ``clear``,
marks, hang-up) and this module (the transport that ties them together).

Events (registered with the public ``event_handler``/``add_event_handler``, kept in an
``EventHandlers`` registry of our own): ``on_client_connected(transport, ws)``,
``on_client_disconnected(transport, ws)``, ``on_mark(transport, name, played)``,
``on_media_timeout(transport, secs)`` (nothing received for ``media_timeout_secs``),
``on_input_abuse(transport, reason)`` (the caller's input broke the rate limits of
``input_limits`` beyond bounds: the owner closes the stream 1008; input is dropped meanwhile).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from loguru import logger
from pipecat.transports.base_transport import BaseTransport

from pipelines.ports import NO_CALL_METRICS, CallMetrics
from pipelines.twilio.transport_client import (
    AiohttpWebsocketParams,
    EventHandlers,
    MarkBook,
    WebsocketClient,
)
from pipelines.twilio.transport_input import AiohttpWebsocketInputTransport
from pipelines.twilio.transport_output import AiohttpWebsocketOutputTransport

EVENTS = (
    "on_client_connected",
    "on_client_disconnected",
    "on_mark",
    "on_media_timeout",
    "on_input_abuse",
)

__all__ = [
    "AiohttpWebsocketInputTransport",
    "AiohttpWebsocketOutputTransport",
    "AiohttpWebsocketParams",
    "AiohttpWebsocketTransport",
]


class AiohttpWebsocketTransport(BaseTransport):
    """Pipecat transport around an already-prepared aiohttp ``WebSocketResponse``.

    Args:
        websocket: The prepared socket (the handler has read ``connected``/``start``).
        params: Transport parameters.
        input_name: Optional input processor name.
        output_name: Optional output processor name.
        metrics: Where bridge latency, audio seconds and the call's output events go.
    """

    def __init__(
        self,
        websocket: web.WebSocketResponse,
        params: AiohttpWebsocketParams,
        input_name: str | None = None,
        output_name: str | None = None,
        metrics: CallMetrics = NO_CALL_METRICS,
    ) -> None:
        """Create the transport; see the class docstring for the arguments."""
        super().__init__(input_name=input_name, output_name=output_name)
        self._params = params
        self._client = WebsocketClient(websocket, params.ws_close_timeout)
        self._events = EventHandlers(self, EVENTS)
        self._input = AiohttpWebsocketInputTransport(self, self._client, params, name=input_name)
        self._output = AiohttpWebsocketOutputTransport(
            self,
            self._client,
            params,
            metrics=metrics,
            name=output_name,
            enable_direct_mode=params.direct_output,
        )
        self.marks = MarkBook()

    def add_event_handler(self, event_name: str, handler: Callable[..., Any]) -> None:
        """Call ``handler(transport, *args)`` on each ``event_name`` event (one of ``EVENTS``).

        Raises:
            ValueError: ``event_name`` is not an event of this transport.
        """
        self._events.add(event_name, handler)

    def remove_event_handler(self, event_name: str, handler: Callable[..., Any]) -> None:
        """Stop calling ``handler`` on ``event_name``; no-op when it was not added."""
        self._events.remove(event_name, handler)

    async def cleanup(self) -> None:
        """Wait for event handlers still running (idempotent; input and output both call it)."""
        await super().cleanup()
        await self._events.wait()

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
        waiter = self.marks.expect(name)
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), timeout_secs)
        except TimeoutError:
            return None

    @property
    def played_audio_secs(self) -> float:
        """Bot audio proven played by echoed marks (seconds)."""
        return self.marks.played_audio_secs

    async def notify(self, event_name: str, *args: Any) -> None:
        """Fire one of this transport's events (for its input and output processors)."""
        self._events.fire(event_name, *args)

    async def mark_echoed(self, name: str) -> None:
        """Twilio echoed mark ``name``: settle its waiters, fire ``on_mark``."""
        played = self.marks.echoed(name)
        if played is None:
            logger.debug(f"{self}: echo of a mark that was not sent or already echoed")
            return
        self._events.fire("on_mark", name, played)
