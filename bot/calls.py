"""Live calls in this process: admission limits, lookup by call SID, and drain on shutdown."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from loguru import logger


@dataclass
class CallRecord:
    """One call the process is serving.

    Attributes:
        call_sid: Twilio's call SID.
        stream_sid: Twilio's stream SID.
        persona_id: The persona the call started with (kept for the whole call).
        started: ``time.monotonic()`` at the media ``start`` message.
        task: The task running the call's pipeline, cancelled on shutdown.
        abort: Ends the call at once with a reason (closes the stream so Twilio plays the
            TwiML apology); used when draining.
        end_reason: Why the call ended, set once.
    """

    call_sid: str
    stream_sid: str
    persona_id: str
    started: float = field(default_factory=time.monotonic)
    task: asyncio.Task[None] | None = None
    abort: Callable[[str], Awaitable[None]] | None = None
    end_reason: str | None = None

    @property
    def duration_secs(self) -> float:
        """Seconds since the call's stream started."""
        return time.monotonic() - self.started


class CallRegistry:
    """Admission control and bookkeeping for every call in the process.

    A call is *reserved* when its TwiML is served (so a burst of webhooks cannot over-admit),
    and *registered* when its media stream starts. Reservations expire if the stream never
    comes.
    """

    def __init__(self, max_calls: int, reservation_ttl_secs: float = 15.0) -> None:
        self.max_calls = max_calls
        self._reservation_ttl_secs = reservation_ttl_secs
        self._calls: dict[str, CallRecord] = {}
        self._reservations: OrderedDict[str, float] = OrderedDict()
        self.accepting = True
        self.totals: Counter[str] = Counter()
        self._idle = asyncio.Event()
        self._idle.set()
        # Overload guard: returns why new calls must be refused now (e.g. event-loop lag).
        self.guard: Callable[[], str | None] | None = None

    def __len__(self) -> int:
        return len(self._calls)

    @property
    def calls(self) -> list[CallRecord]:
        """A snapshot of the live calls."""
        return list(self._calls.values())

    def _expire_reservations(self) -> None:
        now = time.monotonic()
        while self._reservations:
            sid, at = next(iter(self._reservations.items()))
            if now - at < self._reservation_ttl_secs:
                break
            self._reservations.popitem(last=False)

    def load(self) -> int:
        """Calls running plus calls whose TwiML was served but whose stream has not started."""
        self._expire_reservations()
        pending = sum(1 for sid in self._reservations if sid not in self._calls)
        return len(self._calls) + pending

    def reserve(self, call_sid: str) -> bool:
        """Reserve a place for a call about to stream; False when full or draining."""
        if not self.accepting:
            self.totals["refused_draining"] += 1
            return False
        if call_sid in self._reservations or call_sid in self._calls:
            return True
        if self.load() >= self.max_calls:
            self.totals["refused_full"] += 1
            return False
        if self.guard is not None and (why := self.guard()) is not None:
            self.totals["refused_overload"] += 1
            logger.warning(f"call {call_sid} refused: overloaded ({why})")
            return False
        self._reservations[call_sid] = time.monotonic()
        return True

    def register(self, record: CallRecord, *, require_reservation: bool = False) -> bool:
        """Register a call whose stream started; False if the process cannot take it.

        Args:
            record: The call.
            require_reservation: Only admit a stream whose TwiML this process served in the
                last ``reservation_ttl_secs`` (each reservation admits one stream, so a
                captured upgrade cannot be replayed).
        """
        reserved = self._reservations.pop(record.call_sid, None) is not None
        if require_reservation and not reserved:
            self.totals["refused_unreserved"] += 1
            return False
        if not self.accepting or (not reserved and self.load() >= self.max_calls):
            self.totals["refused_stream"] += 1
            return False
        if record.call_sid in self._calls:
            self.totals["duplicate_stream"] += 1
            return False
        self._calls[record.call_sid] = record
        self._idle.clear()
        self.totals["started"] += 1
        return True

    def unregister(self, record: CallRecord) -> None:
        """Forget a call that ended."""
        if self._calls.get(record.call_sid) is record:
            del self._calls[record.call_sid]
            self.totals["ended"] += 1
            if not self._calls:
                self._idle.set()

    def get(self, call_sid: str) -> CallRecord | None:
        """The live call with this SID, if any."""
        return self._calls.get(call_sid)

    async def drain(self, timeout_secs: float) -> None:
        """Stop admitting calls, wait up to ``timeout_secs`` for live ones, then cancel the rest."""
        self.accepting = False
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_secs)
        except TimeoutError:
            pass
        records = list(self._calls.values())
        if not records:
            return
        logger.info(f"ending {len(records)} live call(s) for shutdown")
        aborts = [r.abort("server shutting down") for r in records if r.abort is not None]
        if aborts:
            await asyncio.wait_for(asyncio.gather(*aborts, return_exceptions=True), 2.0)
        tasks = [r.task for r in records if r.task and not r.task.done()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=1.0)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2.0)
