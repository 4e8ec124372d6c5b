"""A Live API session opened before its call's media stream (pre-warming), and its hand-over.

Twilio fetches the call's TwiML a few hundred milliseconds before it opens the media stream.
``WarmSession`` spends that time on the connection: it opens ``client.aio.live.connect`` with
the call's complete ``LiveConnectConfig`` (TLS, WebSocket upgrade, ``setup`` and
``setupComplete``) and then holds the open session, sending nothing: the greeting instruction
goes only once the stream is there (``pipelines.gemini.service`` seeds the history when the
pipeline's context arrives), so no greeting audio is generated for nobody and lost.

The call's ``LiveConnection`` takes it as its first connection (``connection_loop``:
``preopened``): ``claim()`` waits for an open still in progress and returns the session, or
None when the open failed or the session was closed (the connection then opens a fresh one,
as without pre-warming). The context manager stays in the holder task; ``release()`` ends it,
which closes the socket. Whoever made the warm session (the server's webhook) expires an
unclaimed one with ``close()``.

May import google-genai and ``pipelines._compat`` (its socket state).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from google import genai
from google.genai.live import AsyncSession
from google.genai.types import LiveConnectConfig
from loguru import logger

from pipelines._compat import genai_session

# How long closing waits for the holder task to finish the socket's close handshake.
CLOSE_TIMEOUT_SECS = 1.0


class WarmSession:
    """One call's Live API session, opened ahead of its stream (see the module docstring).

    Args:
        client: The process's shared ``genai.Client`` for the persona's API version.
        model: The model name (``models/...``).
        config: The call's complete ``LiveConnectConfig`` (no resumption handle); the call
            uses this same config for every later connection.
        label: Names the holder task (e.g. the call SID).
        on_settled: Called once when the open is over: True open, False failed (not called
            for an open cut short by ``close()``).

    Attributes:
        error: Why the open failed (None while it goes or went well).
        opened_secs: Seconds the open took (None until it is open).
    """

    def __init__(
        self,
        client: genai.Client,
        model: str,
        config: LiveConnectConfig,
        *,
        label: str = "",
        on_settled: Callable[[bool], None] | None = None,
    ) -> None:
        self.client = client
        self.model = model
        self.config = config
        self.error: BaseException | None = None
        self.opened_secs: float | None = None
        self._label = label
        self._on_settled = on_settled
        self._session: AsyncSession | None = None
        self._settled = asyncio.Event()  # open, failed or closed
        self._release = asyncio.Event()
        self._claimed = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start opening the session (in a task); idempotent."""
        if self._task is None and not self._release.is_set():
            self._task = asyncio.create_task(self._hold(), name=f"warm-session:{self._label}")

    @property
    def claimed(self) -> bool:
        """Whether a call took it (``claim`` returned the session)."""
        return self._claimed

    @property
    def is_open(self) -> bool:
        """Open and not yet released."""
        return self._session is not None and not self._release.is_set()

    async def claim(self) -> AsyncSession | None:
        """The open session for the call, waiting for an open in progress; None if unusable.

        None when the open failed, the session was released or its socket already closed
        (e.g. the service ended it while it waited): the caller opens a fresh one. A session
        is claimed once; later calls return None.
        """
        if self._claimed:
            return None
        self.start()
        await self._settled.wait()
        session = self._session
        if session is None or self._release.is_set() or not genai_session.is_open(session):
            return None
        self._claimed = True
        return session

    def release(self) -> None:
        """Let the holder close the session (idempotent; the socket closes in the background)."""
        self._release.set()

    async def close(self) -> None:
        """Release the session and wait (bounded) until its socket is closed."""
        self.release()
        task = self._task
        if task is None or task.done():
            return
        if not self._settled.is_set():
            task.cancel()  # still opening: nobody waits for that setup any more
        done, _ = await asyncio.wait({task}, timeout=CLOSE_TIMEOUT_SECS)
        if not done:
            task.cancel()

    async def _hold(self) -> None:
        started = time.monotonic()
        try:
            async with self.client.aio.live.connect(model=self.model, config=self.config) as s:
                self.opened_secs = time.monotonic() - started
                self._session = s
                self._settled.set()
                if self._on_settled is not None:
                    self._on_settled(True)
                await self._release.wait()
        except asyncio.CancelledError:
            self.error = self.error or ConnectionError("cancelled while opening")
            raise
        except Exception as e:
            # A refused setup (APIError), an unreachable service (OSError), a failed upgrade:
            # the call opens its own session and meets the same error there, with its handling.
            self.error = e
            if not self._settled.is_set() and self._on_settled is not None:
                self._on_settled(False)
            if not self._release.is_set():
                logger.debug(f"warm Live API session failed: {e.__class__.__name__}: {e}"[:200])
        finally:
            self._session = None
            self._settled.set()
            self._release.set()
