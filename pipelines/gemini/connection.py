"""One call's Live API connection on google-genai's public session API, kept alive across drops.

``LiveConnection`` holds ``client.aio.live.connect(model, config)`` open in a task and reads
every server message (``live_receive.parse`` on the raw socket: the audio fast path). It knows
nothing of frames: the service (``pipelines.gemini.service``) gets ``on_ready(resumed)`` for
each new connection, ``on_message(message)`` for each message, and ``on_failed(code, reason)``
once when the call cannot go on. What it keeps for the call:

- **Resumption.** The newest handle of a ``sessionResumptionUpdate`` that says ``resumable``,
  and its ``lastConsumedClientMessageIndex``; each connection is opened with the handle
  (``session_resumption`` added to the caller's ``LiveConnectConfig`` per connection), and
  ``sent`` counts the client messages sent on the current connection (issue 12 re-sends those
  the server had not consumed).
- **GoAway handover.** A ``goAway`` starts a handover: at the next moment when neither side
  speaks (``bot_quiet`` / ``user_quiet``, set by the service), never later than
  ``HANDOVER_MARGIN_SECS`` before the deadline, the socket is closed and a new connection
  resumes the session. A call that is ending (``can_hand_over()`` False) keeps its socket.
- **Drops.** A socket that drops is reopened with the handle at once, then with backoff and
  jitter; ``MAX_CONSECUTIVE_FAILURES`` drops in a row (a connection that stayed up
  ``STABLE_SECS`` resets the count) fail the call. Permanent closes (1007/1008) and a setup
  the server refuses fail it at once.
- **Futile resumption.** A resumed connection that ends within ``FUTILE_RESUME_SECS`` resumed a
  session the server will not keep (the 15-minute audio-session limit, a session it lost):
  the next connection starts a fresh session and the service re-seeds it from the call's
  context (``on_ready(resumed=False)``).

Private access: only the raw socket, through ``pipelines._compat.genai_session``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from google import genai
from google.genai.errors import APIError
from google.genai.live import AsyncSession
from google.genai.types import LiveConnectConfig, LiveServerMessage, SessionResumptionConfig
from loguru import logger

from pipelines._compat import genai_session
from pipelines.gemini import live_receive

# Close codes the Live API uses for setups and requests that will never succeed as sent.
PERMANENT_CLOSE_CODES = frozenset({1007, 1008})
# A GoAway handover waits for a quiet moment, but never past this much before the deadline.
HANDOVER_MARGIN_SECS = 1.0
# A resumed connection that ends this soon resumed a session the server will not keep.
FUTILE_RESUME_SECS = 3.0
# Drops in a row that fail the call; a connection up this long resets the count.
MAX_CONSECUTIVE_FAILURES = 3
STABLE_SECS = 10.0
# Reconnect backoff after the first (immediate) retry: base * 2^(n-1), capped, with jitter.
BACKOFF_BASE_SECS = 0.2
BACKOFF_MAX_SECS = 2.0
# How long closing waits for the connection task to end.
CLOSE_TIMEOUT_SECS = 1.0

ReadyCallback = Callable[[bool], Awaitable[None]]
MessageCallback = Callable[[LiveServerMessage], Awaitable[None]]
FailedCallback = Callable[[int | None, str], Awaitable[None]]


def parse_duration_secs(value: str | None, default: float = 10.0) -> float:
    """A protobuf Duration string (``"50s"``, ``"1.5s"``) in seconds."""
    if not value:
        return default
    try:
        return float(value.strip().removesuffix("s"))
    except ValueError:
        return default


def backoff_secs(failures: int, rng: random.Random | None = None) -> float:
    """The wait before reconnect attempt ``failures`` (1-based): 0 first, then jittered."""
    if failures <= 1:
        return 0.0
    base = min(BACKOFF_MAX_SECS, BACKOFF_BASE_SECS * 2 ** (failures - 2))
    return base * (0.5 + 0.5 * (rng or random).random())


class LiveConnection:
    """The Live API connection of one call (see the module docstring).

    Args:
        client: The process's shared ``genai.Client``.
        model: The model name (``models/...``).
        config: The complete ``LiveConnectConfig`` without a resumption handle.
        on_ready: Awaited for each new connection; True when it resumed the session.
        on_message: Awaited for each server message, in order.
        on_failed: Awaited once when the call cannot go on: ``(close_code, reason)``.
        can_hand_over: False while the call is ending (a GoAway handover then waits it out).
        time_scale: Multiplies the handover margin and the futile-resume window.
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
    ) -> None:
        self._client = client
        self.model = model
        self._config = config
        self._on_ready = on_ready
        self._on_message = on_message
        self._on_failed = on_failed
        self._can_hand_over = can_hand_over
        self._time_scale = time_scale
        self.raw_sends = not client.vertexai
        self.session: AsyncSession | None = None
        self.handle: str | None = None
        self.last_consumed_index: int | None = None
        self.sent = 0
        self.connections = 0
        self.bot_quiet = asyncio.Event()
        self.bot_quiet.set()
        self.user_quiet = asyncio.Event()
        self.user_quiet.set()
        self.message_rx_at = 0.0
        self._closing = False
        self._failed = False
        self._handing_over = False
        self._resumed_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._handover_task: asyncio.Task[None] | None = None

    # lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Open the first connection (in a task); idempotent."""
        if self._task is None and not self._closing:
            self._task = asyncio.create_task(self._run(), name="gemini-live-connection")

    async def close(self) -> None:
        """Close the connection for good; no callback runs after this returns."""
        self._closing = True
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

    def connect_config(self) -> LiveConnectConfig:
        """The config for the next connection: the caller's, with the newest handle."""
        resumption = SessionResumptionConfig(handle=self.handle)
        return self._config.model_copy(update={"session_resumption": resumption})

    # sending -------------------------------------------------------------------------------

    async def send_json(self, text: str) -> bool:
        """Send a prebuilt JSON client message (hot path); False without an open session."""
        session = self.session
        if session is None:
            return False
        self.sent += 1
        await genai_session.send_text(session, text)
        return True

    async def send_realtime_input(self, **kwargs: Any) -> bool:
        """``AsyncSession.send_realtime_input``; False without an open session."""
        session = self.session
        if session is None:
            return False
        self.sent += 1
        await session.send_realtime_input(**kwargs)
        return True

    async def send_client_content(self, **kwargs: Any) -> bool:
        """``AsyncSession.send_client_content``; False without an open session."""
        session = self.session
        if session is None:
            return False
        self.sent += 1
        await session.send_client_content(**kwargs)
        return True

    async def send_tool_response(self, **kwargs: Any) -> bool:
        """``AsyncSession.send_tool_response``; False without an open session."""
        session = self.session
        if session is None:
            return False
        self.sent += 1
        await session.send_tool_response(**kwargs)
        return True

    # the connection task -----------------------------------------------------------------

    async def _fail(self, code: int | None, reason: str) -> None:
        if self._failed or self._closing:
            return
        self._failed = True
        await self._on_failed(code, reason)

    async def _run(self) -> None:
        failures = 0
        while not self._closing:
            resumed = self.handle is not None
            try:
                async with self._client.aio.live.connect(
                    model=self.model, config=self.connect_config()
                ) as session:
                    started = time.monotonic()
                    error = await self._serve(session, resumed)
            except APIError as e:
                # Raised by connect(): the setup was refused (or the service is unavailable).
                await self._fail(e.code, e.details or e.message or str(e))
                return
            except OSError as e:
                await self._fail(None, f"cannot reach the Live API: {e}")
                return
            except Exception as e:
                # e.g. an HTTP error at the WebSocket handshake (websockets.InvalidStatus), or
                # an answer the SDK cannot parse: the call must not stay connected in silence.
                await self._fail(None, f"Live API connection failed: {e!r}"[:200])
                return
            finally:
                self.session = None
            if self._closing:
                return
            if self._handing_over:
                self._handing_over = False
                failures = 0
                continue
            if time.monotonic() - started >= STABLE_SECS:
                failures = 0
            failures += 1
            if not await self._after_drop(error, failures):
                return
            wait = backoff_secs(failures)
            if wait:
                await asyncio.sleep(wait)

    async def _after_drop(self, error: Exception, failures: int) -> bool:
        """Decide after an unplanned end of a connection; True to reconnect."""
        task = self._handover_task
        if task is not None and not task.done():
            task.cancel()  # the socket dropped before the GoAway handover ran: reconnect now
        if self._resume_was_futile():
            self.handle = None
        if isinstance(error, APIError) and error.code in PERMANENT_CLOSE_CODES:
            await self._fail(error.code, error.details or str(error))
            return False
        logger.warning(
            f"Live API connection error (failure {failures}/{MAX_CONSECUTIVE_FAILURES}): "
            f"{error.__class__.__name__}: {error}"[:300]
        )
        if failures >= MAX_CONSECUTIVE_FAILURES:
            code = error.code if isinstance(error, APIError) else None
            await self._fail(code, f"Live API connection lost: {error}")
            return False
        return True

    async def _serve(self, session: AsyncSession, resumed: bool) -> Exception:
        """Run one connection until it ends; the error that ended it."""
        self.session = session
        self.sent = 0
        self.connections += 1
        self._resumed_at = time.monotonic() if resumed else None
        logger.debug(f"Live API connected ({'resumed' if resumed else 'new session'})")
        try:
            await self._on_ready(resumed)
            while True:
                raw = await genai_session.receive_raw(session)
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
        if update is not None:
            if update.resumable and update.new_handle:
                self.handle = update.new_handle
            if update.last_consumed_client_message_index is not None:
                self.last_consumed_index = update.last_consumed_client_message_index
        if message.go_away is not None:
            self._start_handover(message.go_away.time_left)

    # GoAway handover -----------------------------------------------------------------------

    def _start_handover(self, time_left: str | None) -> None:
        if self._handover_task is not None and not self._handover_task.done():
            return
        margin = HANDOVER_MARGIN_SECS * self._time_scale
        deadline = time.monotonic() + parse_duration_secs(time_left) - margin
        fresh = self._resume_was_futile()
        self._handover_task = asyncio.create_task(
            self._handover(deadline, fresh), name="gemini-live-handover"
        )

    def _resume_was_futile(self) -> bool:
        at = self._resumed_at
        if at is None or time.monotonic() - at >= FUTILE_RESUME_SECS * self._time_scale:
            return False
        logger.debug("a resumed Live API connection ended at once: starting a fresh session")
        return True

    async def _handover(self, deadline: float, fresh: bool = False) -> None:
        """Close the socket at a quiet moment before the deadline; ``_run`` then resumes.

        Waits for a moment when neither side speaks (audio sent while reconnecting is lost),
        but not past the deadline. A call already ending keeps its old connection.
        """
        while time.monotonic() < deadline:
            try:
                for quiet in (self.bot_quiet, self.user_quiet):
                    await asyncio.wait_for(quiet.wait(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                break
            if self.bot_quiet.is_set() and self.user_quiet.is_set():
                break
        session = self.session
        if session is None or self._closing or not self._can_hand_over():
            return
        logger.debug("GoAway: handing over to a new Live API connection")
        if fresh:
            self.handle = None  # the service re-seeds the new session from the call's context
        self._handing_over = True
        await session.close()
