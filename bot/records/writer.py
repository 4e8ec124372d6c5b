"""The records writer: calls never wait for the database, and a lost record is counted.

``submit`` (at a call's end) only appends to a bounded in-process queue: no I/O, no await.
One task takes up to ``BATCH`` records (at most ``BATCH_TURNS`` transcript turns) at a time and
inserts them in one transaction (the
``calls`` rows with ``RETURNING`` ids, then their turns; a record already stored, from a batch
whose commit was lost, is skipped). While the database is down (refused, locked, timed out)
the batch is retried with exponential backoff (``RETRY_FIRST_SECS`` doubling up to
``RETRY_MAX_SECS``: one connection attempt per 10 s costs the database nothing) and new
records keep queueing; when the queue is full the *oldest* record
is dropped and counted (``stats()["dropped"]``), with one WARNING per 30 s. At shutdown the
queue is flushed for up to ``STOP_FLUSH_SECS``; what is left then is counted as ``lost``.

The schema is migrated (``Database.upgrade``) by this task before its first write, with the
same retries: a database down at start delays records, never the server.

Retention: with ``retention_days`` set, records older than that are deleted once at start
and then every ``RETENTION_EVERY_SECS``, by the same task between batches (never on a call's
path).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from loguru import logger
from sqlalchemy import delete, insert, select
from sqlalchemy.exc import DataError, IntegrityError

from bot.records.database import Database
from bot.records.record import CallSummary, summary_of
from bot.records.tables import calls, tool_calls, turns
from pipelines.aio import wait_then_cancel

QUEUE_MAX = 10_000
# A batch's rows are prepared on the event loop: ~15 us per turn row. 200 rows keep each step
# of the writer around 4 ms (``python -m sim.records_bench``); it yields between batches.
BATCH = 20
BATCH_TURNS = 200
RETRY_FIRST_SECS = 0.5
RETRY_MAX_SECS = 10.0
STOP_FLUSH_SECS = 5.0
RETENTION_EVERY_SECS = 3600.0
WARN_EVERY_SECS = 30.0


class RecordWriter:
    """Writes call records to ``database`` off the calls' path (see the module docstring).

    Args:
        database: The records database (migrated).
        max_queue: Records held while the database is slow or down.
        batch: Records per transaction.
        retention_days: Delete records older than this; None keeps them all.
        retry_first_secs: The first retry's wait (doubling up to ``retry_max_secs``).
        retry_max_secs: The longest wait between retries.
        numbers: How caller and called numbers are kept (``record.mask_number``).
    """

    def __init__(
        self,
        database: Database,
        *,
        max_queue: int = QUEUE_MAX,
        batch: int = BATCH,
        retention_days: float | None = None,
        retry_first_secs: float = RETRY_FIRST_SECS,
        retry_max_secs: float = RETRY_MAX_SECS,
        numbers: str = "last4",
    ) -> None:
        self.database = database
        self.numbers = numbers
        self._migrated = asyncio.Event()
        self._queue: deque[CallSummary] = deque()
        self._max_queue = max_queue
        self._batch = batch
        self._retention_days = retention_days
        self._retry_first = retry_first_secs
        self._retry_max = retry_max_secs
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._next_retention = 0.0
        self._last_warning = 0.0
        self._stats: dict[str, Any] = {
            "submitted": 0,
            "written": 0,
            "dropped": 0,
            "lost": 0,
            "rejected": 0,
            "failures": 0,
            "retention_deleted": 0,
            "write_secs": 0.0,
            "database_up": True,
            "last_error": None,
        }

    # the calls' side ---------------------------------------------------------------------

    def unrecorded(self) -> None:
        """A call whose record could not be built: counted as lost (the caller logged why)."""
        self._stats["lost"] += 1

    def submit(self, record: CallSummary) -> None:
        """Queue a finished call's record; never blocks (the oldest goes when full, counted)."""
        self._stats["submitted"] += 1
        if self._stopping and self._task is None:
            self._stats["lost"] += 1
            return
        if len(self._queue) >= self._max_queue:
            self._queue.popleft()
            self._stats["dropped"] += 1
            self._warn(f"call records: queue full ({self._max_queue}); dropped the oldest")
        self._queue.append(record)
        self._wake.set()

    def call_ended(
        self,
        info: Any,
        persona: str,
        duration_secs: float,
        end_reason: str,
        call: Any,
        bad_input: Mapping[str, int],
    ) -> None:
        """Record a call that just ended (``bot.media_stream``); never raises.

        Args:
            info: The call's ``CallInfo`` (SIDs, numbers).
            persona: The persona id.
            duration_secs: The call's length.
            end_reason: Why it ended.
            call: Its ``CallPipeline``, or None when it failed before it was built.
            bad_input: Protocol errors by kind.
        """
        try:
            summary = summary_of(
                info, persona, duration_secs, end_reason, call, bad_input, self.numbers
            )
        except Exception:
            self._stats["lost"] += 1
            logger.exception(f"call {info.call_sid}: its record could not be made")
            return
        self.submit(summary)

    @property
    def migrated(self) -> bool:
        """Whether the schema has been brought up to date (the writer's first step)."""
        return self._migrated.is_set()

    async def wait_migrated(self) -> None:
        """Return once the schema is up to date (at once after the writer's first step)."""
        await self._migrated.wait()

    def stats(self) -> dict[str, Any]:
        """Counters for metrics and ``/stats``.

        ``queued`` records waiting, ``submitted``, ``written``, ``dropped`` (queue full),
        ``lost`` (left at shutdown), ``rejected`` (refused by the database as data: an
        integrity or data error, logged), ``failures`` (failed write attempts),
        ``retention_deleted``, ``write_secs`` (time spent in writes), ``database_up`` and
        ``last_error``.
        """
        return {**self._stats, "queued": len(self._queue)}

    # lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer task."""
        if self._task is None:
            kept = f"{self._retention_days:g} days" if self._retention_days else "forever"
            logger.info(
                f"call records: {self.database.where} (kept {kept}; numbers: {self.numbers})"
            )
            self._task = asyncio.get_running_loop().create_task(self._run(), name="records")

    async def stop(self, flush_secs: float = STOP_FLUSH_SECS) -> None:
        """Write what is queued for up to ``flush_secs``; count the rest as lost."""
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        await wait_then_cancel(task, flush_secs)
        if self._queue:
            self._stats["lost"] += len(self._queue)
            logger.warning(
                f"call records: {len(self._queue)} record(s) not written at shutdown "
                f"({self.database.where}: {self._stats['last_error'] or 'no time left'})"
            )
            self._queue.clear()

    async def flushed(self, timeout_secs: float = 10.0) -> bool:
        """Wait until the queue is empty and nothing is being written (tests, tools)."""
        deadline = time.monotonic() + timeout_secs
        while self._queue or self._writing:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    # the task -----------------------------------------------------------------------------

    _writing = False

    async def _run(self) -> None:
        delay = self._retry_first
        while not self._migrated.is_set():  # at start, until the database first answers
            try:
                await self.database.upgrade()
                self._migrated.set()
            except Exception as e:
                self._failed(e)
                if self._stopping:
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max)
        if not self._stats["database_up"]:
            logger.info(f"call records: {self.database.where} is up; writing records")
        self._stats["database_up"] = True
        delay = self._retry_first
        while True:
            if not self._queue:
                if self._stopping:
                    return
                self._wake.clear()  # before the sweep: a record queued during it wakes us
                await self._retention()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), RETENTION_EVERY_SECS)
                continue
            batch = self._next_batch()
            self._writing = True
            try:
                written = await self._write_batch(batch)
            except Exception as e:  # the database is down, locked or refusing: retry
                self._writing = False
                self._failed(e)
                if self._stopping:
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max)
                continue
            self._writing = False
            delay = self._retry_first
            taken = {id(r) for r in batch}  # the queue may have lost its oldest meanwhile
            while self._queue and id(self._queue[0]) in taken:
                self._queue.popleft()
            if not self._stats["database_up"]:
                logger.info(f"call records: {self.database.where} is back; writing again")
            self._stats["database_up"] = True
            self._stats["written"] += written

    def _next_batch(self) -> list[CallSummary]:
        batch: list[CallSummary] = []
        rows = 0
        for record in self._queue:
            if batch and (len(batch) >= self._batch or rows + len(record.turns) > BATCH_TURNS):
                break
            batch.append(record)
            rows += len(record.turns)
        return batch

    async def _write(self, batch: list[CallSummary]) -> None:
        started = time.perf_counter()
        try:
            async with self.database.engine.begin() as conn:
                sids = [r.call_sid for r in batch]
                stored = set(
                    (await conn.execute(select(calls.c.call_sid).where(calls.c.call_sid.in_(sids))))
                    .scalars()
                    .all()
                )
                fresh = list({r.call_sid: r for r in batch if r.call_sid not in stored}.values())
                if not fresh:
                    return
                result = await conn.execute(
                    insert(calls).returning(
                        calls.c.id, calls.c.call_sid, sort_by_parameter_order=True
                    ),
                    [r.row() for r in fresh],
                )
                ids = {sid: cid for cid, sid in result.all()}
                rows = [row for r in fresh for row in r.turn_rows(ids[r.call_sid])]
                if rows:
                    await conn.execute(insert(turns), rows)
                tools = [row for r in fresh for row in r.tool_rows(ids[r.call_sid])]
                if tools:
                    await conn.execute(insert(tool_calls), tools)
        finally:
            self._stats["write_secs"] += time.perf_counter() - started

    async def _write_batch(self, batch: list[CallSummary]) -> int:
        """Write ``batch``; how many were stored. An outage raises (the batch is retried).

        A batch the database refuses as data (an integrity or data error) is written record by
        record, and a record refused alone is dropped, counted and logged: one bad record must
        not hold the queue up forever.
        """
        refused: Exception | None = None
        try:
            await self._write(batch)
            return len(batch)
        except (IntegrityError, DataError) as e:
            refused = e
        if len(batch) == 1:
            self._reject(batch[0], refused)
            return 0
        written = 0
        for record in batch:
            try:
                await self._write([record])
                written += 1
            except (IntegrityError, DataError) as e:
                self._reject(record, e)
        return written

    def _reject(self, record: CallSummary, error: Exception) -> None:
        self._stats["rejected"] += 1
        logger.error(
            f"call records: the record of call {record.call_sid} was refused by "
            f"{self.database.where} and dropped: {error.__class__.__name__}: "
            f"{str(error).splitlines()[0][:200]}"
        )

    def _failed(self, error: Exception) -> None:
        self._stats["failures"] += 1
        text = f"{error.__class__.__name__}: {error}".splitlines()[0][:200]
        self._stats["last_error"] = text
        if self._stats["database_up"]:
            self._last_warning = 0.0
        self._stats["database_up"] = False
        self._warn(
            f"call records: cannot write to {self.database.where} ({text}); "
            f"{len(self._queue)} record(s) queued, retrying"
        )

    async def _retention(self) -> None:
        if self._retention_days is None or time.monotonic() < self._next_retention:
            return
        self._next_retention = time.monotonic() + RETENTION_EVERY_SECS
        cutoff = datetime.now(UTC) - timedelta(days=self._retention_days)
        try:
            async with self.database.engine.begin() as conn:
                old = select(calls.c.id).where(calls.c.started_at < cutoff)
                await conn.execute(delete(turns).where(turns.c.call_id.in_(old)))
                await conn.execute(delete(tool_calls).where(tool_calls.c.call_id.in_(old)))
                result = await conn.execute(delete(calls).where(calls.c.started_at < cutoff))
        except Exception as e:
            self._failed(e)
            self._next_retention = time.monotonic() + 60.0
            return
        deleted = result.rowcount or 0
        self._stats["retention_deleted"] += deleted
        if deleted:
            logger.info(
                f"call records: deleted {deleted} record(s) older than "
                f"{self._retention_days:g} days"
            )

    def _warn(self, text: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY_SECS:
            self._last_warning = now
            logger.warning(text)
