"""Spread call setups out so a burst of new calls does not stall the calls already up.

Starting a call is a few milliseconds of CPU in many steps (pipeline start, a TLS handshake
and the ``setup`` exchange with the Live API). When twenty calls start together, their steps
land in the same event-loop iterations and every running call's next audio frame waits behind
all of them. ``SetupGate`` lets a limited number of calls set up at once: a call takes a slot
before its pipeline starts and gives it back when its Live API session is ready, when it ends,
or after ``max_hold_secs`` (a slow Live API must not hold up every other new call).

A session pre-opened at the call's webhook (``warm_session``) takes its slot there, before its
TLS handshake and ``setup``; a stream arriving while that open still waits or runs takes the
same slot over instead of a second one (one slot per call). Warm opens are *spare* work: they
get a slot only when no call whose caller is on the line waits for one, and a warm open whose
stream arrives while it still queues moves to the front (``GateTicket.promote``). A burst of
webhooks (each opening a session that takes the Live API ~0.4 s to set up) therefore never
makes a caller already on the line wait behind it (found by the fuzzer: 250 warm opens queued
ahead of a neighbour's call left it without a session for 10 s).
"""

from __future__ import annotations

import asyncio
from collections import deque

# Calls setting up at once, and how long one may keep its slot. A slot is held through the Live
# API's answer to ``setup`` (~0.4 s of waiting, little CPU), so the width sets the setups per
# second: at 2 (5 a second) a burst of 21 callers left the last one 4.8 s without a greeting
# and hearing the holding phrase; at 4 the burst is served in ~2 s.
SETUP_CONCURRENCY = 4
MAX_HOLD_SECS = 1.0


class SetupSlot:
    """One call's place in the gate; ``release()`` is idempotent."""

    def __init__(self, gate: SetupGate, max_hold_secs: float) -> None:
        """Hold one place of ``gate`` for at most ``max_hold_secs``."""
        self._gate = gate
        self._released = False
        self._timer = asyncio.get_running_loop().call_later(max_hold_secs, self.release)

    @property
    def released(self) -> bool:
        """Whether the place was given back (by its holder or after ``max_hold_secs``)."""
        return self._released

    def release(self) -> None:
        """Give the place back (once)."""
        if self._released:
            return
        self._released = True
        self._timer.cancel()
        self._gate._left()


class SetupGate:
    """At most ``concurrency`` calls set up at once.

    The server owns one per application (its calls share one event loop); it binds to the loop
    that first waits on it.

    Args:
        concurrency: Setups running at once.
        max_hold_secs: A slot is given back after this long even if the setup is not done.

    Attributes:
        concurrency: Setups running at once.
        held: Slots held now.
        peak: The most slots held at once so far (tests and ``/stats`` read it).
    """

    def __init__(
        self, concurrency: int = SETUP_CONCURRENCY, max_hold_secs: float = MAX_HOLD_SECS
    ) -> None:
        """Create the gate; see the class docstring for the arguments."""
        self._max_hold_secs = max_hold_secs
        self._urgent: deque[GateTicket] = deque()
        self._spare: deque[GateTicket] = deque()
        self.concurrency = concurrency
        self.held = 0
        self.peak = 0

    async def enter(self, *, spare: bool = False) -> SetupSlot:
        """Wait for a place; the caller must ``release()`` the slot it gets.

        Args:
            spare: Speculative work (a warm open): served only when no other setup waits.
        """
        return await self.ticket(spare=spare).wait()

    def ticket(self, *, spare: bool = False) -> GateTicket:
        """A place in the queue now, to ``wait()`` on (and ``promote()`` if it became urgent)."""
        return GateTicket(self, spare)

    @property
    def waiting(self) -> int:
        """Setups waiting for a place (urgent and spare)."""
        return len(self._urgent) + len(self._spare)

    def _queue(self, ticket: GateTicket) -> None:
        (self._spare if ticket.spare else self._urgent).append(ticket)
        self._grant()

    def _promote(self, ticket: GateTicket) -> None:
        try:
            self._spare.remove(ticket)
        except ValueError:
            return  # granted already, or withdrawn
        self._urgent.append(ticket)

    def _withdraw(self, ticket: GateTicket) -> None:
        """The waiter went away: leave the queue, or give back a place granted meanwhile."""
        if ticket.granted:
            self._left()
            return
        for queue in (self._urgent, self._spare):
            try:
                queue.remove(ticket)
            except ValueError:
                pass

    def _grant(self) -> None:
        while self.held < self.concurrency and (self._urgent or self._spare):
            ticket = (self._urgent or self._spare).popleft()
            if ticket.grant():
                self.held += 1
                self.peak = max(self.peak, self.held)

    def _left(self) -> None:
        self.held -= 1
        self._grant()


class GateTicket:
    """One setup's place in the gate's queue (``SetupGate.ticket``)."""

    def __init__(self, gate: SetupGate, spare: bool) -> None:
        self._gate = gate
        self._future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.spare = spare
        gate._queue(self)

    @property
    def granted(self) -> bool:
        """Whether a place was given to it."""
        return self._future.done() and not self._future.cancelled()

    def grant(self) -> bool:
        """Give it a place; False if its waiter is gone."""
        if self._future.done():
            return False
        self._future.set_result(None)
        return True

    def promote(self) -> None:
        """A caller now waits on this setup: it goes ahead of every spare one."""
        if self.spare:
            self.spare = False
            self._gate._promote(self)

    async def wait(self) -> SetupSlot:
        """Wait for the place; the caller must ``release()`` the slot it gets."""
        try:
            await self._future
        except asyncio.CancelledError:
            self._gate._withdraw(self)
            raise
        return SetupSlot(self._gate, self._gate._max_hold_secs)
