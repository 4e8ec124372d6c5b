"""One call's Live API connection on google-genai's public session API, kept alive across drops.

``LiveConnection`` holds ``client.aio.live.connect(model, config)`` open in a task
(``connection_loop``) and reads every server message (``live_receive.parse`` on the raw socket:
the audio fast path). It knows
nothing of frames: the service (``pipelines.gemini.service``) gets ``on_ready(resumed)`` for
each new connection, ``on_message(message)`` for each message, and ``on_failed(code, reason)``
once when the call cannot go on. What it keeps for the call:

- **Resumption.** The newest handle of a ``sessionResumptionUpdate`` that says ``resumable``,
  and its ``lastConsumedClientMessageIndex``; each connection is opened with the handle.
- **No caller word lost** (``resend.ClientLog``, whose docstring says why this is exact). Every
  client message is logged until a handle covers it; caller input sent while no connection is
  live is kept (bounded, ~10 s). A new connection, once ``on_ready`` has run (the service seeds
  a fresh session there, with ``direct=True`` sends), gets the old connection's unconsumed
  messages, then the kept input, in order; only then does it go live.
- **Planned handover** (when: ``handover``). After a ``goAway``, once the model is not
  generating and the caller not speaking, or at the end of a caller turn (``caller_turn_ended``)
  if the connection must go; never later than a margin before the deadline. Not when playback
  ends: received audio keeps playing while the next connection opens, and nothing received is
  dropped. A call that is ending (``can_hand_over()`` False) keeps its socket.
- **Drops** (1011, network, a refused reconnect): reconnect within a per-call time budget
  (``reconnect``), then ``on_failed``. Permanent closes (1007/1008) fail at once; so does a
  refused *first* connection (the call never started: admission's business).
- **Futile resumption.** A resumed connection that ends within ``FUTILE_RESUME_SECS`` resumed a
  session the server will not keep (the 15-minute audio-session limit, a session it lost): the
  next connection starts a fresh session, which the service re-seeds (``on_ready(False)``); a
  stale handle refused at setup (1008) does the same.

**Outage interface** (for the call's watchdogs, ``pipelines.call.watchdog``; stable):

- ``connected: asyncio.Event``: set while a connection is live (ready, its re-send done),
  cleared the moment it ends (handover or drop). Never set again after ``close()``/failure.
- ``offline_since: float | None``: ``time.monotonic()`` when the current outage began (None
  while live, and before the first connection).
- ``on_gap: Callable[[float], Awaitable[None]] | None``: assign it; awaited in its own task
  once per outage when no connection has been live for ``reconnect.GAP_SECS`` x
  ``time_scale``, with the seconds offline so far. Not before the first connection, nor once
  the call failed or closed. Exceptions are logged.
- ``reconnecting``: True while an outage is being repaired (the call goes on).
- ``restart()``: move to a new connection now, resuming the session (a stalled reply); the
  outage it causes is reported like any other.

Private access: only the raw socket, through ``pipelines._compat.genai_session``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from google import genai
from google.genai.live import AsyncSession
from google.genai.types import LiveConnectConfig, SessionResumptionConfig
from loguru import logger

from pipelines._compat import genai_session
from pipelines.gemini.connection_loop import (
    ConnectionLoop,
    FailedCallback,
    MessageCallback,
    PreopenedSession,
    ReadyCallback,
)
from pipelines.gemini.handover import HandoverPlan
from pipelines.gemini.reconnect import GapCallback, GapWatch
from pipelines.gemini.resend import ClientLog, Entry, Kind
from pipelines.ports import NO_CALL_METRICS, CallMetrics

# How often a pending GoAway handover looks for its moment (``handover.HandoverPlan``).
HANDOVER_POLL_SECS = 0.02
# A resumed connection that ends this soon resumed a session the server will not keep.
FUTILE_RESUME_SECS = 3.0
# How long closing waits for the connection task to end.
CLOSE_TIMEOUT_SECS = 1.0


def parse_duration_secs(value: str | None, default: float = 10.0) -> float:
    """A protobuf Duration string (``"50s"``, ``"1.5s"``) in seconds."""
    if not value:
        return default
    try:
        return float(value.strip().removesuffix("s"))
    except ValueError:
        return default


class LiveConnection(ConnectionLoop):
    """The Live API connection of one call (see the module docstring).

    Args:
        client: The process's shared ``genai.Client``.
        model: The model name (``models/...``).
        config: The complete ``LiveConnectConfig`` without a resumption handle.
        on_ready: Awaited for each new connection; True when it resumed the session.
        on_message: Awaited for each server message, in order.
        on_failed: Awaited once when the call cannot go on: ``(close_code, reason)``.
        can_hand_over: False while the call is ending (a GoAway handover then waits it out).
        time_scale: Multiplies the handover margin, the futile-resume window, the reconnect
            budget, the stable time and the gap.
        context_notes: The model takes mid-session ``clientContent`` (``resend.ClientLog``).
        metrics: Where handovers, reconnects and the Live API's closes are reported.
    """

    def __init__(
        self,
        client: genai.Client,
        model: str,
        config: LiveConnectConfig,
        *,
        on_ready: ReadyCallback,
        on_message: MessageCallback,
        on_failed: FailedCallback,
        can_hand_over: Callable[[], bool] = lambda: True,
        time_scale: float = 1.0,
        context_notes: bool = True,
        metrics: CallMetrics = NO_CALL_METRICS,
    ) -> None:
        self._client = client
        self.metrics = metrics
        self.handover_cause = "go_away"  # of the handover in progress: go_away or watchdog
        self.model = model
        self._config = config
        self._on_ready = on_ready
        self._on_message = on_message
        self._on_failed = on_failed
        self._can_hand_over = can_hand_over
        self._time_scale = time_scale
        self._notes = context_notes
        self.raw_sends = not client.vertexai
        self.session: AsyncSession | None = None
        self.handle: str | None = None
        self.last_consumed_index: int | None = None
        self.connections = 0
        self.handovers = 0
        self.drops = 0
        self.bot_quiet = asyncio.Event()
        self.bot_quiet.set()
        self.user_quiet = asyncio.Event()
        self.user_quiet.set()
        self.message_rx_at = 0.0
        self.live = False
        self.connected = asyncio.Event()
        self._gap = GapWatch(time_scale, lambda: self._closing or self._failed)
        self.log = ClientLog()
        self.plan = HandoverPlan(time_scale)
        self._suppress = False
        self._closing = False
        self._failed = False
        self._handing_over = False
        self._resumed_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._handover_task: asyncio.Task[None] | None = None
        # A session opened before the call's pipeline (pre-warming): the first connection
        # takes it when usable (``connection_loop.PreopenedSession``); set it before start().
        self.preopened: PreopenedSession | None = None

    # lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Open the first connection (in a task); idempotent."""
        if self._task is None and not self._closing:
            self._task = asyncio.create_task(self._run(), name="gemini-live-connection")

    async def close(self) -> None:
        """Close the connection for good; no callback runs after this returns."""
        self._closing = True
        self.live = False
        self.connected.clear()
        self._gap.stop()
        tasks = [t for t in (self._handover_task, self._task) if t is not None and not t.done()]
        for task in tasks:
            if task is not asyncio.current_task():
                task.cancel()
        others = [t for t in tasks if t is not asyncio.current_task()]
        if others:
            await asyncio.wait(others, timeout=CLOSE_TIMEOUT_SECS)
        self.session = None

    @property
    def closing(self) -> bool:
        """Whether ``close()`` was called."""
        return self._closing

    @property
    def offline_since(self) -> float | None:
        """``time.monotonic()`` when the current outage began; None while live."""
        return self._gap.offline_since

    @property
    def on_gap(self) -> GapCallback | None:
        """Awaited once per outage that the caller can hear (see the module docstring)."""
        return self._gap.on_gap

    @on_gap.setter
    def on_gap(self, callback: GapCallback | None) -> None:
        self._gap.on_gap = callback

    @property
    def reconnecting(self) -> bool:
        """No live connection, but the call goes on (an outage being repaired)."""
        return self.offline_since is not None and not (self._closing or self._failed)

    @property
    def sent(self) -> int:
        """Client messages sent on the current connection (the last one's index)."""
        return self.log.sent

    def connect_config(self) -> LiveConnectConfig:
        """The config for the next connection: the caller's, with the newest handle."""
        resumption = SessionResumptionConfig(handle=self.handle)
        return self._config.model_copy(update={"session_resumption": resumption})

    # sending -------------------------------------------------------------------------------

    async def send_json(self, text: str, *, direct: bool = False) -> bool:
        """Send a prebuilt JSON client message (hot path); see ``_send``."""
        return await self._send("json", text, direct)

    async def send_realtime_input(self, *, direct: bool = False, **kwargs: Any) -> bool:
        """``AsyncSession.send_realtime_input``; see ``_send``."""
        return await self._send("realtime", kwargs, direct)

    async def send_client_content(self, *, direct: bool = False, **kwargs: Any) -> bool:
        """``AsyncSession.send_client_content``; see ``_send``."""
        return await self._send("content", kwargs, direct)

    async def send_tool_response(self, **kwargs: Any) -> bool:
        """``AsyncSession.send_tool_response``; False without a live connection (not kept)."""
        for response in kwargs.get("function_responses") or ():
            self.plan.tools_pending.discard(getattr(response, "id", None) or "")
        session = self.session
        if session is None or not self.live:
            return False
        self.log.count_only()
        await session.send_tool_response(**kwargs)
        return True

    async def _send(self, kind: Kind, payload: Any, direct: bool) -> bool:
        """Send on the live connection (``direct``: on the open one, from ``on_ready``).

        Without a live connection, during an outage, the message is kept and sent once the
        next connection is ready; True then too. False when nothing was sent nor kept: before
        the first connection, or after the call failed or closed.
        """
        session = self.session
        if session is not None and (self.live or direct):
            self.log.record(kind, payload)
            await self._deliver(session, kind, payload)
            return True
        if self.connections and not (self._closing or self._failed):
            return self.log.queue_offline(kind, payload)
        return False

    async def _deliver(self, session: AsyncSession, kind: Kind, payload: Any) -> None:
        if kind == "json":
            await genai_session.send_text(session, payload)
        elif kind == "realtime":
            await session.send_realtime_input(**payload)
        else:
            await session.send_client_content(**payload)

    async def _resend(self, session: AsyncSession, entry: Entry) -> None:
        self.log.record(entry.kind, entry.payload)
        await self._deliver(session, entry.kind, entry.payload)

    # GoAway handover -----------------------------------------------------------------------

    def _start_handover(self, time_left: str | None) -> None:
        if self._handover_task is not None and not self._handover_task.done():
            return
        now = time.monotonic()
        left = parse_duration_secs(time_left)
        deadline = self.plan.go_away(now, left)
        fresh = self._resume_was_futile()
        self.handover_cause = "go_away"
        if self.plan.restart_on_go_away(now, left) and self._can_hand_over():
            logger.debug("GoAway shorter than an answer that just began: the next one gives it")
            deadline = now  # switch at once, the old connection's rest unplayed
            self._suppress = True
        self._handover_task = asyncio.create_task(
            self._handover(deadline, fresh), name="gemini-live-handover"
        )

    def restart(self) -> bool:
        """Move to a new connection now, resuming the session (a watchdog's reconnect).

        The old connection's messages from now on are not played; what it had not consumed
        is re-sent. False without an open connection, or while the call is ending.
        """
        if self.session is None or self._closing or not self._can_hand_over():
            return False
        self.handover_cause = "watchdog"
        self._hand_over_now()
        return True

    def caller_turn_ended(self) -> None:
        """The caller stopped speaking (local VAD): switch now if this connection must go.

        A goAway is pending, or the connection will not last an answer (``handover``): the
        next connection gets the caller's words re-sent and answers them whole.
        """
        if self.session is None or not self.live or self._closing:
            return
        if not self.plan.switch_at_turn_end(time.monotonic()) or not self._can_hand_over():
            return
        logger.debug("handing over at the end of the caller's turn")
        self.handover_cause = "go_away"
        self._hand_over_now()

    def _hand_over_now(self) -> None:
        """Start a handover at once (replacing one that waits for a quiet moment)."""
        task = self._handover_task
        if task is not None and not task.done():
            task.cancel()
        self._suppress = True
        self._handover_task = asyncio.create_task(
            self._handover(time.monotonic(), self._resume_was_futile()),
            name="gemini-live-handover",
        )

    def _resume_was_futile(self) -> bool:
        at = self._resumed_at
        if at is None or time.monotonic() - at >= FUTILE_RESUME_SECS * self._time_scale:
            return False
        logger.debug("a resumed Live API connection ended at once: starting a fresh session")
        self.plan.lifetime = None  # that goAway was the session's limit, not the connection's
        return True

    async def _handover(self, deadline: float, fresh: bool = False) -> None:
        """Close the socket once the model is idle and the caller quiet, or at the deadline.

        ``_run`` then resumes on a new connection, which re-sends what this one had not
        consumed. A call already ending keeps its old connection.
        """
        session = self.session
        while time.monotonic() < deadline:
            if self.plan.idle and self.user_quiet.is_set():
                break
            await asyncio.sleep(HANDOVER_POLL_SECS)
        else:
            if not self._suppress:
                logger.debug("GoAway: the deadline forces the handover (received audio plays)")
        if session is None or session is not self.session or self._closing:
            return
        if not self._can_hand_over():
            self._suppress = False
            return
        logger.debug("GoAway: handing over to a new Live API connection")
        if fresh:
            self.handle = None  # the service re-seeds the new session from the call's context
        self._handing_over = True
        await session.close()
