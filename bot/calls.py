"""Live calls in this process: admission limits, lookup by call SID, and drain on shutdown.

Drain (``CallRegistry.drain``, on SIGTERM/SIGINT): admission stops at once (``/readyz`` says
503, the webhook answers the busy TwiML; streams whose TwiML was already served are still
taken), live calls run on to their natural end for the drain window, and at its deadline each
call still up is wrapped up: the bot finishes its current answer (bounded), says goodbye, and
hangs up through the REST API once the goodbye has been played
(``pipelines.call.control.CallControl.wrap_up``). Only a call that could not be wrapped up
within ``WRAP_UP_SECS`` is closed abnormally. One log line when the drain starts, one when it
ends, with how each call ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from bot.calls_page.live import LiveView
from bot.metrics import ServerMetrics
from bot.session_quota import SessionQuota
from bot.settings import Settings
from pipelines.gemini.reconnect import is_quota_refusal
from pipelines.ports import TranscriptTurn

# After the drain deadline: how long the goodbyes may take (the bot's current answer finishing,
# up to 15 s, then the goodbye played, up to 10 s, then the REST hang-up). Real time at every
# time scale, like the audio it waits for. A deployment's grace period must cover
# drain seconds + this + the preStop pause (deploy/k8s/deployment.yaml).
WRAP_UP_SECS = 30.0
SHUTDOWN_REASON = "server shutting down"
# ``totals`` keys of refusals -> the ``voicebot_calls_refused`` cause (``bot.metrics``).
REFUSAL_CAUSES = {
    "refused_draining": "draining",
    "refused_full": "capacity",
    "refused_quota": "quota",
    "refused_overload": "lag_guard",
    "refused_unreserved": "unreserved_stream",
    "refused_stream": "stream_refused",
    "duplicate_stream": "duplicate_stream",
}


@dataclass(frozen=True)
class Refusal:
    """Why admission turned a call away (``CallRegistry.admit``).

    Attributes:
        key: The ``totals`` key (``refused_full``, ...; ``REFUSAL_CAUSES``).
        detail: For the log line.
        local: True when another process of the deployment may well have room (this one is
            full, draining, over its lag guard or its configured session share); False for
            the Gemini project quota learned from a refusal, which all processes share.
    """

    key: str
    detail: str
    local: bool = True


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
            TwiML apology); the last resort of a drain.
        wrap_up: Ends the call politely with a reason: the current answer finishes, then a
            goodbye is played and the call is hung up; False if the call was already ending.
        end_reason: Why the call ended, set once.
        bad_input: Invalid messages of the stream by kind (before and after ``start``), set at
            the end for the metrics.
        live: Its state and last transcript lines, for the calls page (``bot.calls_page``).
    """

    call_sid: str
    stream_sid: str
    persona_id: str
    started: float = field(default_factory=time.monotonic)
    task: asyncio.Task[None] | None = None
    abort: Callable[[str], Awaitable[None]] | None = None
    wrap_up: Callable[[str], Coroutine[Any, Any, bool]] | None = None
    end_reason: str | None = None
    bad_input: dict[str, int] = field(default_factory=dict)
    live: LiveView = field(default_factory=LiveView, repr=False)
    _wrapping: asyncio.Task[bool] | None = field(default=None, repr=False)

    @property
    def duration_secs(self) -> float:
        """Seconds since the call's stream started."""
        return time.monotonic() - self.started


async def _wrap_up(record: CallRecord, wrap_up: Callable[[str], Coroutine[Any, Any, bool]]) -> bool:
    """One call's wrap-up; a failure is logged (the call is then cut at the end of the drain)."""
    try:
        return await wrap_up(SHUTDOWN_REASON)
    except Exception:
        logger.exception(f"call {record.call_sid}: wrap-up failed")
        return False


class CallRegistry:
    """Admission control and bookkeeping for every call in the process.

    A call is *reserved* when its TwiML is served (so a burst of webhooks cannot over-admit),
    and *registered* when its media stream starts. Reservations expire if the stream never
    comes.

    Args:
        max_calls: Calls admitted at once.
        reservation_ttl_secs: How long a served TwiML holds its place.
        quota: The Gemini session quota admission keeps to (``bot.session_quota``).
        time_scale: Multiplies the drain window (tests and demos); the wrap-up after it is
            real time.
    """

    def __init__(
        self,
        max_calls: int,
        reservation_ttl_secs: float = 15.0,
        *,
        quota: SessionQuota | None = None,
        time_scale: float = 1.0,
    ) -> None:
        self.max_calls = max_calls
        self.quota = quota or SessionQuota()
        self._time_scale = time_scale
        self._reservation_ttl_secs = reservation_ttl_secs
        self._calls: dict[str, CallRecord] = {}
        self._reservations: OrderedDict[str, float] = OrderedDict()
        self.accepting = True
        self.totals: Counter[str] = Counter()
        self._idle = asyncio.Event()
        self._idle.set()
        self._hurry = asyncio.Event()
        self._closing = False  # past the drain window: no stream is taken any more
        self.max_live = 0  # the most calls live at once since start (/stats calls_max)
        # Overload guard: returns why new calls must be refused now (e.g. event-loop lag).
        self.guard: Callable[[], str | None] | None = None
        # Prometheus metrics: starts, ends and refusals (the app sets it).
        self.metrics: ServerMetrics | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> CallRegistry:
        """The registry of ``VOICEBOT_MAX_CALLS`` and the Gemini session quota settings."""
        quota = SessionQuota(
            settings.gemini_max_sessions,
            handover_reserve=settings.gemini_handover_reserve,
            time_scale=settings.time_scale,
        )
        return cls(settings.max_calls, quota=quota, time_scale=settings.time_scale)

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
        """Reserve a place for a call about to stream; False (counted) when it cannot be."""
        refusal = self.admit(call_sid)
        if refusal is None:
            return True
        self.refuse(call_sid, refusal)
        return False

    def admit(self, call_sid: str) -> Refusal | None:
        """Reserve a place for a call about to stream: None, else why not (not counted yet).

        The caller either counts the refusal (:meth:`refuse`: the busy TwiML) or, for a
        refusal another process need not share, passes the call on (:meth:`redirected`).
        """
        if not self.accepting:
            return Refusal("refused_draining", "draining")
        if call_sid in self._reservations or call_sid in self._calls:
            return None
        load = self.load()
        if load >= self.max_calls:
            return Refusal("refused_full", "at capacity")
        if not self.quota.admits(load):
            # A configured limit is this process's share; a learned one is the project's quota,
            # which every process of the deployment shares.
            limit, local = self.quota.limit, self.quota.learned is None
            return Refusal("refused_quota", f"Gemini session limit {limit} reached", local)
        if self.guard is not None and (why := self.guard()) is not None:
            return Refusal("refused_overload", f"overloaded ({why})")
        self._reservations[call_sid] = time.monotonic()
        return None

    def refuse(self, call_sid: str, refusal: Refusal) -> None:
        """Count a refusal of :meth:`admit` (the caller hears the busy TwiML)."""
        self._refused(refusal.key)
        if refusal.key in ("refused_quota", "refused_overload"):
            logger.warning(f"call {call_sid} refused: {refusal.detail}")

    def redirected(self, refusal: Refusal) -> None:
        """Count a webhook passed on to another process (``<Redirect>``) instead of refused."""
        self.totals["redirected"] += 1
        if self.metrics is not None:
            self.metrics.redirected(REFUSAL_CAUSES[refusal.key])

    def release(self, call_sid: str) -> bool:
        """Give back a served TwiML's place whose stream never came (an expired warm session).

        False when there was none (the stream started, or the reservation already expired).
        """
        return self._reservations.pop(call_sid, None) is not None

    def register(self, record: CallRecord, *, require_reservation: bool = False) -> bool:
        """Register a call whose stream started; False if the process cannot take it.

        Args:
            record: The call.
            require_reservation: Only admit a stream whose TwiML this process served in the
                last ``reservation_ttl_secs`` (each reservation admits one stream, so a
                captured upgrade cannot be replayed).

        During the drain window, a stream whose TwiML was served before the drain began is
        still taken (the caller was told to connect); it is wrapped up with the others.
        """
        reserved = self._reservations.pop(record.call_sid, None) is not None
        if require_reservation and not reserved:
            self._refused("refused_unreserved")
            return False
        if self._closing or (
            not reserved and (not self.accepting or self.load() >= self.max_calls)
        ):
            self._refused("refused_stream")
            return False
        if record.call_sid in self._calls:
            self._refused("duplicate_stream")
            return False
        self._calls[record.call_sid] = record
        self.max_live = max(self.max_live, len(self._calls))
        self._idle.clear()
        self.totals["started"] += 1
        if self.metrics is not None:
            self.metrics.call_started(record.persona_id)
        return True

    def _refused(self, key: str) -> None:
        self.totals[key] += 1
        if self.metrics is not None:
            self.metrics.refused(REFUSAL_CAUSES[key])

    def note_refused(self, cause: str) -> None:
        """A call refused outside admission (e.g. ``call_token`` at its stream's start)."""
        self.totals[f"refused_{cause}"] += 1
        if self.metrics is not None:
            self.metrics.refused(cause)

    def unregister(self, record: CallRecord) -> None:
        """Forget a call that ended."""
        if record._wrapping is not None and not record._wrapping.done():
            record._wrapping.cancel()  # it only waits for a quiet moment of this call
        if self._calls.get(record.call_sid) is record:
            del self._calls[record.call_sid]
            self.totals["ended"] += 1
            if self.metrics is not None:
                self.metrics.call_ended(record.persona_id, record.end_reason, record.bad_input)
            if not self._calls:
                self._idle.set()

    def turn_ended(self, call_sid: str, turn: TranscriptTurn) -> None:
        """A turn of a live call's transcript closed (``ProcessResources.turn_ended``)."""
        record = self._calls.get(call_sid)
        if record is not None:
            record.live.turn_ended(turn)

    def get(self, call_sid: str) -> CallRecord | None:
        """The live call with this SID, if any."""
        return self._calls.get(call_sid)

    def session_failed(self, call_sid: str, code: int | None, reason: str) -> None:
        """A call's Live API session was refused or lost (``ProcessResources.session_failed``).

        A quota refusal teaches the session limit: the process's other live calls.
        """
        if is_quota_refusal(code, reason):
            self.quota.refused(sum(1 for sid in self._calls if sid != call_sid))

    def hurry(self) -> None:
        """End the drain window now (a second SIGTERM): live calls are wrapped up at once."""
        if not self.accepting:
            logger.info("drain: second signal, wrapping up live calls now")
        self._hurry.set()

    async def drain(self, timeout_secs: float, wrap_up_secs: float = WRAP_UP_SECS) -> None:
        """Stop admitting; let live calls end within the window, then wrap up the rest.

        Args:
            timeout_secs: The drain window (multiplied by the time scale).
            wrap_up_secs: After the window, how long the goodbyes may take before a call
                still up is closed abnormally.
        """
        first = self.accepting
        self.accepting = False
        loop = asyncio.get_running_loop()
        started = loop.time()
        window = timeout_secs * self._time_scale
        before = self.totals["ended"]
        if first:
            logger.info(
                f"draining: admitting no new calls; {len(self._calls)} live call(s) may run to "
                f"their end for {window:g} s, then hear a goodbye"
            )
        idle = loop.create_task(self._idle.wait(), name="drain:idle")
        hurry = loop.create_task(self._hurry.wait(), name="drain:hurry")
        try:
            await asyncio.wait({idle, hurry}, timeout=window, return_when=asyncio.FIRST_COMPLETED)
        finally:
            idle.cancel()
            hurry.cancel()
        natural = self.totals["ended"] - before
        wrapped, cut = await self._wrap_up_all(wrap_up_secs)
        self.totals.update(
            {"drain_natural": natural, "drain_wrapped_up": wrapped, "drain_cut": cut}
        )
        if first or natural or wrapped or cut:
            logger.info(
                f"drain done after {loop.time() - started:.1f} s: {natural} call(s) ended "
                f"naturally, {wrapped} wrapped up with a goodbye, {cut} cut"
            )

    async def _wrap_up_all(self, wrap_up_secs: float) -> tuple[int, int]:
        """Wrap up every live call; abort what is still up after ``wrap_up_secs``."""
        self._closing = True
        records = list(self._calls.values())
        if not records:
            return 0, 0
        logger.info(f"drain deadline: wrapping up {len(records)} live call(s) with a goodbye")
        for r in records:
            if r.wrap_up is not None:
                r._wrapping = asyncio.get_running_loop().create_task(
                    _wrap_up(r, r.wrap_up), name=f"drain:wrap-up:{r.call_sid}"
                )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), wrap_up_secs)
        left = list(self._calls.values())
        for r in records:
            if r._wrapping is not None and not r._wrapping.done():
                r._wrapping.cancel()
        await self._cut(left)
        return len(records) - len(left), len(left)

    async def _cut(self, records: list[CallRecord]) -> None:
        """End calls at once (closing their streams), then cancel what does not stop."""
        if not records:
            return
        logger.warning(f"ending {len(records)} call(s) that could not be wrapped up in time")
        aborts = [r.abort(SHUTDOWN_REASON) for r in records if r.abort is not None]
        if aborts:
            await asyncio.wait_for(asyncio.gather(*aborts, return_exceptions=True), 2.0)
        tasks = [r.task for r in records if r.task and not r.task.done()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=1.0)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2.0)
