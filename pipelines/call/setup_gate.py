"""Spread call setups out so a burst of new calls does not stall the calls already up.

Starting a call is a few milliseconds of CPU in many steps (pipeline start, a TLS handshake
and the ``setup`` exchange with the Live API). When twenty calls start together, their steps
land in the same event-loop iterations and every running call's next audio frame waits behind
all of them. ``SetupGate`` lets a limited number of calls set up at once: a call takes a slot
before its pipeline starts and gives it back when its Live API session is ready, when it ends,
or after ``max_hold_secs`` (a slow Live API must not hold up every other new call).
"""

from __future__ import annotations

import asyncio

# Calls setting up at once, and how long one may keep its slot.
SETUP_CONCURRENCY = 2
MAX_HOLD_SECS = 1.0


class SetupSlot:
    """One call's place in the gate; ``release()`` is idempotent."""

    def __init__(self, semaphore: asyncio.Semaphore, max_hold_secs: float) -> None:
        """Hold one unit of ``semaphore`` for at most ``max_hold_secs``."""
        self._semaphore = semaphore
        self._released = False
        self._timer = asyncio.get_running_loop().call_later(max_hold_secs, self.release)

    def release(self) -> None:
        """Give the place back (once)."""
        if self._released:
            return
        self._released = True
        self._timer.cancel()
        self._semaphore.release()


class SetupGate:
    """At most ``concurrency`` calls set up at once.

    The server owns one per application (its calls share one event loop); it binds to the loop
    that first waits on it.

    Args:
        concurrency: Setups running at once.
        max_hold_secs: A slot is given back after this long even if the setup is not done.
    """

    def __init__(
        self, concurrency: int = SETUP_CONCURRENCY, max_hold_secs: float = MAX_HOLD_SECS
    ) -> None:
        """Create the gate; see the class docstring for the arguments."""
        self._semaphore = asyncio.Semaphore(concurrency)
        self._max_hold_secs = max_hold_secs

    async def enter(self) -> SetupSlot:
        """Wait for a place; the caller must ``release()`` the slot it gets."""
        await self._semaphore.acquire()
        return SetupSlot(self._semaphore, self._max_hold_secs)
