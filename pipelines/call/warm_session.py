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

**Setup gate.** Given the server's ``SetupGate``, the open takes a slot before its TLS handshake
and ``setup``, as any call's setup does (a burst of webhooks must not do every handshake in the
same loop iterations), and gives it back once open or failed. The call's pipeline, arriving
while the open still waits for its slot or runs, takes that slot over (``take_setup_slot``)
rather than entering the gate a second time: one slot per call, and a call never holds a slot
while its own open waits behind it. Its connection's ``claim()`` meanwhile waits for this open;
it never opens a second session for it.

May import google-genai and ``pipelines._compat`` (its socket state).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from google import genai
from google.genai.live import AsyncSession
from google.genai.types import LiveConnectConfig
from loguru import logger

from pipelines._compat import genai_session
from pipelines.call.setup_gate import GateTicket, SetupGate, SetupSlot

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
        gate: The server's setup gate: the open waits for a slot first (None: no gate).

    Attributes:
        error: Why the open failed (None while it goes or went well).
    """

    def __init__(
        self,
        client: genai.Client,
        model: str,
        config: LiveConnectConfig,
        *,
        label: str = "",
        on_settled: Callable[[bool], None] | None = None,
        gate: SetupGate | None = None,
    ) -> None:
        self.client = client
        self.model = model
        self.config = config
        self.error: BaseException | None = None
        self._label = label
        self._on_settled = on_settled
        self._session: AsyncSession | None = None
        self._settled = asyncio.Event()  # open, failed or closed
        self._release = asyncio.Event()
        self._claimed = False
        self._task: asyncio.Task[None] | None = None
        self._gate = gate
        self._slot: SetupSlot | None = None
        self._ticket: GateTicket | None = None
        self._gated = asyncio.Event()  # the slot is held, or will not be (open over)
        self._slot_wanted = False  # the call takes the slot over
        self._in_use = False

    def start(self) -> None:
        """Start opening the session (in a task); idempotent."""
        if self._task is None and not self._release.is_set():
            self._task = asyncio.create_task(self._hold(), name=f"warm-session:{self._label}")

    @property
    def in_use(self) -> bool:
        """Whether a call's pipeline began using it (``take_setup_slot`` or ``claim``).

        From then on that call closes it when it ends, however long the open waits for the gate.
        """
        return self._in_use

    async def claim(self) -> AsyncSession | None:
        """The open session for the call, waiting for an open in progress; None if unusable.

        None when the open failed, the session was released or its socket already closed
        (e.g. the service ended it while it waited): the caller opens a fresh one. A session
        is claimed once; later calls return None.
        """
        if self._claimed:
            return None
        self._in_use = True
        self.start()
        await self._settled.wait()
        session = self._session
        if session is None or self._release.is_set() or not genai_session.is_open(session):
            return None
        self._claimed = True
        return session

    async def take_setup_slot(self) -> SetupSlot | None:
        """For the call's pipeline: the gate slot this open holds or waits for, handed over.

        The call then releases it (when its session is ready or it ends). None when there is
        none to take (no gate, the open is over or never started): the call enters the gate
        itself.
        """
        self._in_use = True
        if self._gate is None or self._task is None or self._settled.is_set():
            return None
        self._slot_wanted = True
        if self._ticket is not None:
            self._ticket.promote()
        await self._gated.wait()
        slot, self._slot = self._slot, None
        return slot if slot is not None and not slot.released else None

    def _drop_slot(self) -> None:
        """Give the slot back unless the call took it over (it releases it then)."""
        self._gated.set()
        if not self._slot_wanted and self._slot is not None:
            self._slot.release()
            self._slot = None

    def release(self) -> None:
        """Let the holder close the session (idempotent; the socket closes in the background)."""
        self._release.set()

    async def close(self) -> None:
        """Release the session and wait (bounded) until its socket is closed."""
        self.release()
        if self._slot is not None:  # handed to a call that ended before taking it
            self._slot.release()
            self._slot = None
        task = self._task
        if task is None or task.done():
            return
        if not self._settled.is_set():
            task.cancel()  # still opening: nobody waits for that setup any more
        done, _ = await asyncio.wait({task}, timeout=CLOSE_TIMEOUT_SECS)
        if not done:
            task.cancel()

    async def _hold(self) -> None:
        try:
            if self._gate is not None:
                # Spare work: calls whose caller is on the line go first (``take_setup_slot``
                # promotes this one once its own stream arrives).
                self._ticket = self._gate.ticket(spare=not self._slot_wanted)
                self._slot = await self._ticket.wait()
                self._gated.set()
            async with self.client.aio.live.connect(model=self.model, config=self.config) as s:
                self._session = s
                self._drop_slot()
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
            self._drop_slot()
            self._session = None
            self._settled.set()
            self._release.set()
