"""The connection task of ``connection.LiveConnection``: one connection after another, each served.

``ConnectionLoop`` holds the methods of the task that ``LiveConnection.start`` runs, split out of
``connection`` so that module keeps the call's state, its send path and the planned switches,
and stays small. ``_run`` opens ``client.aio.live.connect`` with the newest resumption handle
(the first connection takes a pre-opened session instead when it has a usable one: ``_open``),
``_serve`` runs one connection (``on_ready``, the re-send of what the old one had not consumed
and the input kept meanwhile, then every server message through ``live_receive.parse``),
``_track`` keeps the newest resumable handle and feeds the ``handover.HandoverPlan``, and
``_after_drop`` decides after an unplanned end: reconnect within the ``reconnect`` budget, a
fresh session after a futile resume or a refused handle, or ``on_failed``. ``_go_live`` and
``_went_offline`` keep the outage interface (``connected``, the ``GapWatch``) in step.

It is a mixin: ``LiveConnection`` sets every attribute it declares (see its ``__init__``) and
defines the methods it only names under ``TYPE_CHECKING``. Behaviour is described in the
``connection`` module docstring.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from google import genai
from google.genai.errors import APIError
from google.genai.live import AsyncSession
from google.genai.types import LiveConnectConfig, LiveServerMessage
from loguru import logger

from pipelines._compat import genai_session
from pipelines.gemini import live_receive
from pipelines.gemini.handover import HandoverPlan
from pipelines.gemini.reconnect import (
    PERMANENT_CLOSE_CODES,
    GapWatch,
    ReconnectBudget,
    close_code,
    is_quota_refusal,
    refusal,
)
from pipelines.gemini.resend import ClientLog, Entry
from pipelines.ports import CallMetrics

ReadyCallback = Callable[[bool], Awaitable[None]]
MessageCallback = Callable[[LiveServerMessage], Awaitable[None]]
FailedCallback = Callable[[int | None, str], Awaitable[None]]


class PreopenedSession(Protocol):
    """A session opened before the call's pipeline (``pipelines.call.warm_session``)."""

    async def claim(self) -> AsyncSession | None:
        """The open session (waiting for an open in progress), or None when unusable."""

    def release(self) -> None:
        """Close it (in the background); idempotent."""

    @property
    def error(self) -> BaseException | None:
        """Why its open failed, if it did."""


class ConnectionLoop:
    """The connection task's methods, mixed into ``connection.LiveConnection``."""

    _client: genai.Client
    model: str
    _on_ready: ReadyCallback
    _on_message: MessageCallback
    _on_failed: FailedCallback
    _time_scale: float
    _notes: bool
    session: AsyncSession | None
    handle: str | None
    last_consumed_index: int | None
    connections: int
    handovers: int
    drops: int
    message_rx_at: float
    live: bool
    connected: asyncio.Event
    _gap: GapWatch
    log: ClientLog
    plan: HandoverPlan
    _suppress: bool
    _closing: bool
    _failed: bool
    _handing_over: bool
    _resumed_at: float | None
    _handover_task: asyncio.Task[None] | None
    metrics: CallMetrics
    handover_cause: str
    preopened: PreopenedSession | None

    if TYPE_CHECKING:

        def connect_config(self) -> LiveConnectConfig:
            """The config for the next connection (``LiveConnection.connect_config``)."""
            raise NotImplementedError

        async def _resend(self, session: AsyncSession, entry: Entry) -> None:
            raise NotImplementedError

        def _resume_was_futile(self) -> bool:
            raise NotImplementedError

        def _start_handover(self, time_left: str | None) -> None:
            raise NotImplementedError

    # the connection task -----------------------------------------------------------------

    async def _fail(self, code: int | None, reason: str) -> None:
        if self._failed or self._closing:
            return
        self._failed = True
        self._gap.stop()
        await self._on_failed(code, reason)

    async def _run(self) -> None:
        budget = ReconnectBudget(self._time_scale)
        while not self._closing:
            resumed = self.handle is not None
            opened_at: float | None = None
            error: Exception
            try:
                async with self._open() as session:
                    opened_at = time.monotonic()
                    error = await self._serve(session, resumed)
            except APIError as e:
                error = e  # raised by connect(): the setup was refused
            except OSError as e:
                error = OSError(f"cannot reach the Live API: {e}")
            except Exception as e:
                # e.g. an HTTP error at the WebSocket handshake (websockets.InvalidStatus), or
                # an answer the SDK cannot parse.
                error = e
            finally:
                self.session = None
                self._went_offline()
            if self._closing:
                return
            if opened_at is None and self.connections == 0:
                code, reason = refusal(error)
                self.metrics.gemini_closed(code)
                await self._fail(code, reason)  # the first connection: the call never began
                return
            if opened_at is not None and self._handing_over:
                self._handing_over = False
                self.handovers += 1
                self.metrics.handover(self.handover_cause)
                continue
            self.drops += 1
            self.metrics.gemini_closed(close_code(error))
            spent = budget.failed(time.monotonic(), opened_at)
            if not await self._after_drop(error, opened_at is not None, spent, budget):
                return
            self.metrics.reconnect("dropped" if opened_at is not None else "refused")
            wait = budget.wait_secs(spent)
            if wait:
                await asyncio.sleep(wait)

    async def _after_drop(
        self, error: Exception, was_open: bool, spent: float, budget: ReconnectBudget
    ) -> bool:
        """Decide after an unplanned end of a connection (or a refused reconnect)."""
        task = self._handover_task
        if task is not None and not task.done():
            task.cancel()  # the socket dropped before the GoAway handover ran: reconnect now
        if was_open and self._resume_was_futile():
            self.handle = None
        code = close_code(error)
        if not was_open and code == 1008 and self.handle is not None:
            logger.debug("the resumption handle was refused: starting a fresh session")
            self.handle = None  # stale or lost: a fresh session, re-seeded by the service
        elif code in PERMANENT_CLOSE_CODES:
            await self._fail(*refusal(error))
            return False
        what = "connection error" if was_open else "reconnect refused"
        logger.warning(
            f"Live API {what} (attempt {budget.attempt}, {spent:.1f}/{budget.secs:.1f} s of the "
            f"reconnect budget): {error.__class__.__name__}: {error}"[:300]
        )
        if spent >= budget.secs:
            await self._fail(code, f"Live API connection lost for {spent:.1f} s: {error}"[:300])
            return False
        return True

    async def _serve(self, session: AsyncSession, resumed: bool) -> Exception:
        """Run one connection until it ends; the error that ended it."""
        self.session = session
        self.connections += 1
        self._resumed_at = time.monotonic() if resumed else None
        self.plan.connected(time.monotonic())
        self._suppress = False
        resend = self.log.take(resumed=resumed, notes=self._notes)
        logger.debug(
            f"Live API connected ({'resumed' if resumed else 'new session'}; "
            f"re-sending {len(resend)} messages)"
        )
        try:
            await self._on_ready(resumed)
            for entry in resend:
                await self._resend(session, entry)
            while (kept := self.log.pop_offline()) is not None:  # caller input meanwhile
                await self._resend(session, kept)
            self._go_live()
            while True:
                raw = await genai_session.receive_raw(session)
                if self._suppress:
                    continue  # switching: the next connection answers (``handover``)
                self.message_rx_at = time.monotonic()
                message = live_receive.parse(raw)
                self._track(message)
                await self._on_message(message)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            return e

    def _track(self, message: LiveServerMessage) -> None:
        update = message.session_resumption_update
        if update is not None and update.resumable and update.new_handle:
            self.handle = update.new_handle
            index = update.last_consumed_client_message_index
            if index is not None:
                self.last_consumed_index = index
                self.log.covered(index)
            else:  # no index: the handle holds at least the input of the finished answers
                self.log.covered(self.log.answered_index)
        self.plan.observe(message, self.message_rx_at, self.log)
        if message.go_away is not None:
            self._start_handover(message.go_away.time_left)

    @contextlib.asynccontextmanager
    async def _open(self) -> AsyncIterator[AsyncSession]:
        """The next connection: the pre-opened session if there is a usable one, else a new one.

        A pre-opened session is used for the first connection only; it is released (its socket
        closed) when that connection ends, or at once when it cannot be used.
        """
        warm, self.preopened = self.preopened, None
        if warm is not None:
            try:
                session = await warm.claim()
                if session is not None:
                    logger.debug("Live API: taking the pre-opened session")
                    yield session
                    return
                if isinstance(warm.error, APIError) and is_quota_refusal(*refusal(warm.error)):
                    # The service's answer for this call, a moment ago: the call's first
                    # connection was refused (admission learns the quota from it); asking
                    # again would spend a second refusal and delay the caller's apology.
                    raise warm.error
                logger.debug("Live API: the pre-opened session is unusable; opening a new one")
            finally:
                warm.release()
        async with self._client.aio.live.connect(
            model=self.model, config=self.connect_config()
        ) as session:
            yield session

    # outages -----------------------------------------------------------------------------

    def _go_live(self) -> None:
        self.live = True
        self._gap.online()
        self.connected.set()

    def _went_offline(self) -> None:
        self.live = False
        self.connected.clear()
        if self.connections:
            self._gap.offline()
