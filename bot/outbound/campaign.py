"""The campaign scheduler: many outbound calls under a concurrency and a calls-per-second limit.

At most ``concurrency`` calls are *open* (placed and not yet in a final status: completed,
busy, no-answer, failed, canceled) and calls are placed at most ``cps`` per second (spaced
``1/cps`` apart, measured when each request is sent). A placed call's status is learnt by
polling Twilio's REST API (``GET Calls/{sid}.json`` every ``poll_secs``), not from the status
callbacks: the campaign runs as its own process, which Twilio cannot reach, while the callbacks
land on whichever server process the load balancer picks; Twilio's call resource is the one
source every process can read, and a lost callback cannot leave a slot held for ever. Its cost:
one GET per open call per ``poll_secs`` (2 s: 10 GETs a second at a concurrency of 20).

A 429 from Twilio (20429, over the account's calls-per-second) is retried with backoff inside
the REST client (``bot.twilio_rest``); any other refusal ends that row as ``not-placed`` with
Twilio's message, and the campaign goes on. The scheduler is I/O-free: it is given the
``place`` and ``fetch`` coroutines (the CLI passes the REST client's).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.outbound.placing import FINAL_STATUSES

DEFAULT_POLL_SECS = 2.0


@dataclass(frozen=True)
class CampaignRow:
    """One number to call: its CSV line, the number and the row's parameters."""

    line: int
    to: str
    params: Mapping[str, str] = field(default_factory=dict)


@dataclass
class RowResult:
    """What became of a row.

    Attributes:
        row: The row.
        sid: The call's SID (None: never placed).
        status: Twilio's final status, or ``not-placed`` (``error`` says why).
        answered_by: Twilio's ``answered_by`` (AMD), if any.
        duration_secs: Twilio's call duration, if any.
        error: Why the call was not placed.
        placed_at: When the request was sent (the scheduler's clock).
    """

    row: CampaignRow
    sid: str | None = None
    status: str = "not-placed"
    answered_by: str | None = None
    duration_secs: float | None = None
    error: str | None = None
    placed_at: float | None = None


Place = Callable[[CampaignRow], Awaitable[Mapping[str, Any]]]
Fetch = Callable[[str], Awaitable[Mapping[str, Any]]]


class Campaign:
    """Runs rows through ``place`` and ``fetch`` within the limits.

    Args:
        place: Places one row's call; Twilio's call resource (``sid``). Raises on refusal.
        fetch: Fetches a call's resource by SID (``status``, ``answered_by``, ``duration``).
        concurrency: Calls open at once, at most.
        cps: Calls placed per second, at most.
        poll_secs: How often each open call's status is fetched.
        clock: Monotonic seconds.
    """

    def __init__(
        self,
        place: Place,
        fetch: Fetch,
        *,
        concurrency: int,
        cps: float,
        poll_secs: float = DEFAULT_POLL_SECS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency: got {concurrency}, expected at least 1")
        if cps <= 0:
            raise ValueError(f"cps: got {cps}, expected calls per second above 0")
        self._place, self._fetch = place, fetch
        self._slots = asyncio.Semaphore(concurrency)
        self._interval = 1.0 / cps
        self._poll = poll_secs
        self._clock = clock
        self._open: dict[str, RowResult] = {}
        self.max_open = 0  # the most calls open at once (a check of the limit)

    async def run(
        self, rows: list[CampaignRow], on_result: Callable[[RowResult], None] | None = None
    ) -> list[RowResult]:
        """Place every row and wait for every call to end; the results in row order."""
        results = [RowResult(row) for row in rows]
        placing_done = asyncio.Event()
        poller = asyncio.create_task(self._poll_loop(placing_done, on_result), name="campaign:poll")
        try:
            next_at = self._clock()
            for result in results:
                await self._slots.acquire()
                wait = next_at - self._clock()
                if wait > 0:
                    await asyncio.sleep(wait)
                result.placed_at = self._clock()
                next_at = result.placed_at + self._interval
                try:
                    call = await self._place(result.row)
                except Exception as e:  # a refusal ends this row only; the message says why
                    result.error = str(e) or type(e).__name__
                    self._slots.release()
                    if on_result:
                        on_result(result)
                    continue
                result.sid = str(call.get("sid"))
                self._absorb(result, call)
                if result.status in FINAL_STATUSES:
                    self._slots.release()
                    if on_result:
                        on_result(result)
                    continue
                self._open[result.sid] = result
                self.max_open = max(self.max_open, len(self._open))
            placing_done.set()
            await poller
        finally:
            poller.cancel()
        return results

    @staticmethod
    def _absorb(result: RowResult, call: Mapping[str, Any]) -> None:
        result.status = str(call.get("status") or "queued")
        result.answered_by = call.get("answered_by") or result.answered_by
        duration = call.get("duration")
        if duration not in (None, ""):
            result.duration_secs = float(duration)

    async def _poll_loop(
        self, placing_done: asyncio.Event, on_result: Callable[[RowResult], None] | None
    ) -> None:
        while not (placing_done.is_set() and not self._open):
            await asyncio.sleep(self._poll)
            open_now = list(self._open.items())
            answers = await asyncio.gather(
                *(self._fetch(sid) for sid, _ in open_now), return_exceptions=True
            )
            for (sid, result), call in zip(open_now, answers, strict=True):
                if isinstance(call, BaseException):
                    continue  # polled again next time
                self._absorb(result, call)
                if result.status in FINAL_STATUSES:
                    del self._open[sid]
                    self._slots.release()
                    if on_result:
                        on_result(result)


def read_rows(text: str, source: str = "CSV") -> list[CampaignRow]:
    """The rows of a campaign CSV: a ``to`` column, every other column a parameter.

    Raises:
        ValueError: no ``to`` column, a bad number (with its line), or no rows.
    """
    import csv
    import io

    from bot.outbound.placing import DialError, check_number

    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "to" not in [f.strip() for f in reader.fieldnames]:
        raise ValueError(
            f"{source}: expected a header line with a 'to' column (then parameter columns), "
            f"got {reader.fieldnames!r}"
        )
    rows = []
    for record in reader:
        line = reader.line_num
        values = {(k or "").strip(): (v or "").strip() for k, v in record.items() if k}
        try:
            to = check_number(values.pop("to", ""), "to")
        except DialError as e:
            raise ValueError(f"{source}:{line}: {e}") from None
        rows.append(CampaignRow(line, to, {k: v for k, v in values.items() if v}))
    if not rows:
        raise ValueError(f"{source}: no rows after the header")
    return rows
