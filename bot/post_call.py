"""The post-call webhook: a finished call's record POSTed as signed JSON, retried with backoff.

A persona with ``post_call_webhook`` (``pipelines.personas.schema.PostCallWebhook``) has each
finished call's record (``bot.records.record.CallSummary``, numbers masked as the records are)
and its transcript turns (unless the persona's ``records.transcript`` is false) POSTed to its
URL. It works with or without the records database.

- **Never on a call's path.** ``call_ended`` builds the record and appends it to a bounded
  in-process queue: no I/O, no await. When the queue is full the *oldest* waiting delivery is
  dropped and counted (``stats()["dropped"]``). One sender task, with one shared
  ``aiohttp.ClientSession``, encodes the JSON and makes the attempts (at most
  ``concurrency`` at once, so one slow receiver does not hold every other delivery up).
- **Signed** Stripe-style: ``X-Voicebot-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
  "<t>.<body>">`` with the secret from the environment variable the persona names
  (``secret_env``); each attempt is signed with its own timestamp. ``X-Voicebot-Call-Sid``
  names the call and ``Idempotency-Key`` (also the body's ``id``) is the same on every attempt
  of a delivery, so a receiver can de-duplicate retries. ``bot.webhook_signature.verify`` is
  the receiver's side.
- **Retried** on connection errors, timeouts, 408, 429 and 5xx: exponential backoff with
  jitter (``backoff_secs``), or the receiver's ``Retry-After`` when it sends one (capped),
  up to the persona's ``max_attempts``; never on other statuses (a 4xx will not get better,
  a redirect is not followed). A delivery that fails for good logs one WARNING line with the
  call SID, the receiver's host and the status: never the body.
- **Counted**: ``stats()``: ``delivered``, ``failed``, ``dropped`` (queue full), ``lost``
  (left at shutdown), ``retries``; and ``on_outcome(persona, outcome)`` (the Prometheus
  counter ``voicebot_post_call_webhooks``).
- **Shutdown**: ``stop`` makes one last attempt at once for whatever waits for a retry and
  gives the queue ``STOP_FLUSH_SECS``; what is left is counted as ``lost``.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from loguru import logger

from bot.records.record import CallSummary, summary_of
from bot.webhook_retry import (
    RETRY_AFTER_MAX_SECS,
    RETRY_FIRST_SECS,
    RETRY_MAX_SECS,
    backoff_secs,
    retry_after_secs,
    should_retry,
)
from bot.webhook_signature import SIGNATURE_HEADER, sign
from pipelines.aio import wait_then_cancel

CALL_SID_HEADER = "X-Voicebot-Call-Sid"
IDEMPOTENCY_HEADER = "Idempotency-Key"
ATTEMPT_HEADER = "X-Voicebot-Attempt"
EVENT = "call.ended"

QUEUE_MAX = 1000
CONCURRENCY = 4
STOP_FLUSH_SECS = 3.0


def payload(summary: CallSummary, delivery_id: str, transcript: bool) -> bytes:
    """The JSON body: the event, its id, the call's record and (if kept) its transcript turns."""
    row = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in summary.row().items()}
    turns = [asdict(t) for t in summary.turns] if transcript else None
    body = {"event": EVENT, "id": delivery_id, "call": row, "transcript": turns}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class Delivery:
    """One record on its way to one receiver (every attempt shares its ``key`` and body)."""

    call_sid: str
    persona: str
    url: str
    secret: bytes
    timeout_secs: float
    max_attempts: int
    summary: CallSummary
    transcript: bool
    key: str = field(default_factory=lambda: str(uuid.uuid4()))
    attempts: int = 0
    body: bytes | None = None

    @property
    def host(self) -> str:
        """The receiver's host, for logs (never the path or query: they may carry tokens)."""
        return urlsplit(self.url).hostname or "?"


class PostCallSender:
    """Delivers finished calls' records to their personas' webhooks (see the module docstring).

    Args:
        secret_of: The value of an environment variable by name (``bot.settings.env_value``).
        numbers: How caller and called numbers are masked (``record.mask_number``).
        max_queue: Deliveries held (waiting or between attempts) before the oldest is dropped.
        concurrency: Attempts in flight at once.
        retry_first_secs: The first retry's base wait (doubling up to ``retry_max_secs``).
        retry_max_secs: The longest backoff wait.
        retry_after_max_secs: The longest ``Retry-After`` honoured.
        on_outcome: Called with (persona, outcome) for each delivery's end: ``delivered``,
            ``failed``, ``dropped`` or ``lost``.
    """

    def __init__(
        self,
        secret_of: Callable[[str], str | None],
        *,
        numbers: str = "last4",
        max_queue: int = QUEUE_MAX,
        concurrency: int = CONCURRENCY,
        retry_first_secs: float = RETRY_FIRST_SECS,
        retry_max_secs: float = RETRY_MAX_SECS,
        retry_after_max_secs: float = RETRY_AFTER_MAX_SECS,
        on_outcome: Callable[[str, str], None] | None = None,
    ) -> None:
        self.secret_of = secret_of
        self.numbers = numbers
        self.retry_first_secs = retry_first_secs
        self.retry_max_secs = retry_max_secs
        self.retry_after_max_secs = retry_after_max_secs
        self._max_queue = max_queue
        self._concurrency = concurrency
        self._on_outcome = on_outcome
        self._fresh: deque[Delivery] = deque()
        self._waiting: list[tuple[float, int, Delivery]] = []  # (due, seq, delivery): a heap
        self._seq = 0
        self._in_flight: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._stopping = False
        self._stats: dict[str, int] = {
            "submitted": 0,
            "delivered": 0,
            "failed": 0,
            "dropped": 0,
            "lost": 0,
            "attempts": 0,
            "retries": 0,
        }

    # the calls' side ---------------------------------------------------------------------

    def call_ended(
        self,
        info: Any,
        persona: Any,
        duration_secs: float,
        end_reason: str,
        call: Any,
        bad_input: Mapping[str, int],
    ) -> None:
        """Queue a finished call's record if its persona has a webhook; never raises or awaits.

        Args:
            info: The call's ``CallInfo`` (SIDs, numbers).
            persona: The ``Persona`` the call ran with.
            duration_secs: The call's length.
            end_reason: Why it ended.
            call: Its ``CallPipeline``, or None when it failed before it was built.
            bad_input: Protocol errors by kind.
        """
        hook = getattr(persona, "post_call_webhook", None)
        if hook is None:
            return
        try:
            summary = summary_of(
                info, persona.id, duration_secs, end_reason, call, bad_input, self.numbers
            )
        except Exception:
            self._count(persona.id, "failed")
            logger.exception(f"call {info.call_sid}: post-call webhook: no record could be made")
            return
        self.call_summarised(persona, summary)

    def unsent(self, persona: Any) -> None:
        """A call whose record could not be built: counted as failed if a webhook was due."""
        if getattr(persona, "post_call_webhook", None) is not None:
            self._count(persona.id, "failed")

    def call_summarised(self, persona: Any, summary: CallSummary) -> None:
        """Queue a finished call's record (already built) if its persona has a webhook."""
        hook = getattr(persona, "post_call_webhook", None)
        if hook is None:
            return
        secret = self.secret_of(hook.secret_env)
        if not secret:
            self._count(persona.id, "failed")
            logger.warning(
                f"call {summary.call_sid}: post-call webhook not sent: {hook.secret_env} is not "
                "set (set it to the signing secret and restart)"
            )
            return
        self.submit(
            Delivery(
                call_sid=summary.call_sid,
                persona=persona.id,
                url=hook.url,
                secret=secret.encode(),
                timeout_secs=hook.timeout_secs,
                max_attempts=hook.max_attempts,
                summary=summary,
                transcript=persona.records.transcript and summary.transcript_kept,
            )
        )

    def submit(self, delivery: Delivery) -> None:
        """Queue a delivery; never blocks (when full, the oldest waiting one goes, counted)."""
        self._stats["submitted"] += 1
        if self._stopping and self._task is None:
            self._count(delivery.persona, "lost")
            return
        if len(self._fresh) + len(self._waiting) >= self._max_queue:
            if self._fresh:
                old = self._fresh.popleft()
            else:
                old = max(self._waiting)[2]  # the one due last
                self._waiting.remove(max(self._waiting))
                heapq.heapify(self._waiting)
            self._count(old.persona, "dropped")
            logger.warning(
                f"call {old.call_sid}: post-call webhook dropped: queue full ({self._max_queue})"
            )
        self._fresh.append(delivery)
        self._wake.set()

    def stats(self) -> dict[str, int]:
        """Counters for ``/stats`` and tests.

        ``submitted``, ``delivered``, ``failed``, ``dropped`` (queue full), ``lost`` (at
        shutdown), ``attempts``, ``retries``; and now: ``queued`` (not yet tried), ``waiting``
        (for a retry) and ``in_flight``.
        """
        return {
            **self._stats,
            "queued": len(self._fresh),
            "waiting": len(self._waiting),
            "in_flight": len(self._in_flight),
        }

    # lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the sender task (and its HTTP session)."""
        if self._task is None:
            self._session = aiohttp.ClientSession(
                headers={"User-Agent": "voicebot-post-call/1"}, raise_for_status=False
            )
            self._task = asyncio.get_running_loop().create_task(self._run(), name="post-call")

    async def stop(self, flush_secs: float = STOP_FLUSH_SECS) -> None:
        """One last try for everything queued, for up to ``flush_secs``; the rest is lost."""
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        await wait_then_cancel(task, flush_secs)
        for t in list(self._in_flight):
            t.cancel()
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)
        left = [*self._fresh, *(d for _, _, d in self._waiting)]
        self._fresh.clear()
        self._waiting.clear()
        for d in left:
            self._count(d.persona, "lost")
        if left:
            logger.warning(f"post-call webhook: {len(left)} delivery(ies) not made at shutdown")
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def flushed(self, timeout_secs: float = 10.0) -> bool:
        """Wait until nothing is queued, waiting or in flight (tests, tools)."""
        deadline = time.monotonic() + timeout_secs
        while self._fresh or self._waiting or self._in_flight:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    # the task -----------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            now = loop.time()
            if self._stopping:  # the last try: nothing waits for its backoff any more
                self._fresh.extend(d for _, _, d in sorted(self._waiting))
                self._waiting.clear()
            while self._waiting and self._waiting[0][0] <= now:
                self._fresh.append(heapq.heappop(self._waiting)[2])
            while self._fresh and len(self._in_flight) < self._concurrency:
                attempt = loop.create_task(self._attempt(self._fresh.popleft()))
                self._in_flight.add(attempt)
                attempt.add_done_callback(self._in_flight.discard)
            if self._stopping and not (self._fresh or self._in_flight):
                return
            timeout = self._waiting[0][0] - now if self._waiting else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _attempt(self, d: Delivery) -> None:
        try:
            await self._post(d)
        finally:
            self._wake.set()

    async def _post(self, d: Delivery) -> None:
        assert self._session is not None
        if d.body is None:
            d.body = payload(d.summary, d.key, d.transcript)
        d.attempts += 1
        self._stats["attempts"] += 1
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(d.secret, d.body, int(time.time())),
            CALL_SID_HEADER: d.call_sid,
            IDEMPOTENCY_HEADER: d.key,
            ATTEMPT_HEADER: str(d.attempts),
        }
        status: int | None = None
        retry_after: str | None = None
        try:
            async with self._session.post(
                d.url,
                data=d.body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=d.timeout_secs),
                allow_redirects=False,
            ) as response:
                status = response.status
                retry_after = response.headers.get("Retry-After")
            outcome = f"HTTP {status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            kind = "timed out" if isinstance(e, TimeoutError) else e.__class__.__name__
            outcome = f"no answer ({kind})"
        if status is not None and 200 <= status <= 299:
            self._count(d.persona, "delivered")
            logger.debug(f"call {d.call_sid}: post-call webhook delivered (attempt {d.attempts})")
            return
        if should_retry(status) and d.attempts < d.max_attempts:
            wait = retry_after_secs(retry_after) if status in (429, 503) else None
            if wait is None:
                wait = backoff_secs(d.attempts, self.retry_first_secs, self.retry_max_secs)
            wait = min(wait, self.retry_after_max_secs)
            self._stats["retries"] += 1
            self._seq += 1
            due = asyncio.get_running_loop().time() + wait
            heapq.heappush(self._waiting, (due, self._seq, d))
            logger.debug(
                f"call {d.call_sid}: post-call webhook attempt {d.attempts} to {d.host}: "
                f"{outcome}; retrying in {wait:.2f} s"
            )
            return
        self._count(d.persona, "failed")
        why = "not retried" if not should_retry(status) else "giving up"
        logger.warning(
            f"call {d.call_sid}: post-call webhook to {d.host} failed after {d.attempts} "
            f"attempt(s): {outcome} ({why})"
        )

    def _count(self, persona: str, outcome: str) -> None:
        self._stats[outcome] += 1
        if self._on_outcome is not None:
            try:
                self._on_outcome(persona, outcome)
            except Exception:
                logger.exception("post-call webhook: the outcome counter failed")
