"""Pre-warming: the webhook opens an admitted call's Live API session; its stream takes it.

Twilio fetches the TwiML at ``POST /twilio/voice`` and opens the media stream a few hundred
milliseconds later. For a call it admits, the webhook starts a ``WarmSession``
(``pipelines.call.warm_session``): connect, ``setup`` and ``setupComplete`` with the call's
persona and values, exactly the config the call would open with; the greeting is held until
the stream is there. ``WarmSessions`` keeps them by CallSid in the process that served the
webhook (a stream landing on another process is forwarded here, issue 16); the media stream of
that call, matched by the CallSid its verified ``call_token`` vouches for, ``take``s it and
hands it to its pipeline.

- **Admission once.** The warm session lives inside the call's admission reservation
  (``bot.calls``): the reservation is what the session quota counts, so a warm session is not
  counted again, and its stream's registration turns the same place into the live call.
- **Expiry.** A warm session no stream took within ``ttl_secs`` (10 s, scaled by
  ``VOICEBOT_TIME_SCALE``) is closed and its reservation released (``CallRegistry.release``).
- **Setup gate.** Warm opens take turns through the server's ``SetupGate`` like every call's
  setup (a burst of webhooks does not run its TLS handshakes and setups all at once); a stream
  arriving while its open waits takes that open's slot over and waits for it, never a second
  open (``pipelines.call.warm_session``).
- **Failure is not fatal.** A warm open that failed (refused, unreachable) leaves the call to
  open its own session at the stream, as without pre-warming, with that path's handling.
- **Counted** (``counts``; ``/stats`` ``warm_sessions`` and
  ``voicebot_warm_sessions_total{outcome}``): ``opened`` (started), ``ready`` (setup complete),
  ``failed``, ``claimed`` (a stream took it), ``expired``, ``closed`` (shut down unclaimed).

Off with ``VOICEBOT_PREWARM=0`` or a persona's ``prewarm: false``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aiohttp import web
from loguru import logger
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from bot.app_keys import SETTINGS, WARM_SESSIONS
from pipelines.call.setup_gate import SetupGate
from pipelines.call.warm_session import WarmSession
from pipelines.gemini.clients import GeminiClients
from pipelines.personas import call_variables

# How long a warm session waits for its stream (Twilio connects within a second or so).
TTL_SECS = 10.0
OUTCOMES = ("opened", "ready", "failed", "claimed", "expired", "closed")


class WarmSessions:
    """The process's warm sessions by CallSid (see the module docstring).

    Args:
        gemini: The process's shared Gemini clients.
        release: Gives back an expired session's admission reservation (by CallSid).
        ttl_secs: How long an unclaimed session is kept (already scaled).
        gate: The server's setup gate, which warm opens go through (None: no gate).
    """

    def __init__(
        self,
        gemini: GeminiClients,
        release: Callable[[str], object],
        *,
        ttl_secs: float = TTL_SECS,
        gate: SetupGate | None = None,
    ) -> None:
        self._gemini = gemini
        self._gate = gate
        self._release = release
        self._ttl_secs = ttl_secs
        self._warm: dict[str, tuple[WarmSession, asyncio.TimerHandle]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self.counts: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._warm)

    def _count(self, outcome: str) -> None:
        self.counts[outcome] += 1

    def open(self, call_sid: str, persona: Any, variables: Mapping[str, str]) -> None:
        """Start opening ``call_sid``'s session with the config its pipeline would use."""
        if call_sid in self._warm:
            return  # Twilio retried the webhook: the first one is on its way
        instruction = persona.render_system_instruction(variables)
        model, config = persona.connect_config(instruction)
        client = self._gemini.get(persona.api_version())
        warm = WarmSession(
            client, model, config, label=call_sid, on_settled=self._settled, gate=self._gate
        )
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self._ttl_secs, self._expire, call_sid)
        self._warm[call_sid] = (warm, timer)
        self._count("opened")
        warm.start()

    def _settled(self, ok: bool) -> None:
        self._count("ready" if ok else "failed")

    def take(self, call_sid: str) -> WarmSession | None:
        """``call_sid``'s warm session for its stream (once); None when there is none."""
        entry = self._warm.pop(call_sid, None)
        if entry is None:
            return None
        warm, timer = entry
        timer.cancel()
        self._count("claimed")
        # Its call closes it; should the call fail before its pipeline began using the session,
        # this closes it instead (never a Live session held open by nobody). A call using it
        # may still wait for its open (queued in the setup gate): that call closes it.
        loop = asyncio.get_running_loop()
        loop.call_later(self._ttl_secs, lambda: None if warm.in_use else self._close(warm))
        return warm

    def _expire(self, call_sid: str) -> None:
        entry = self._warm.pop(call_sid, None)
        if entry is None:
            return
        self._count("expired")
        self._close(entry[0])
        self._release(call_sid)

    def _close(self, warm: WarmSession) -> None:
        task = asyncio.get_running_loop().create_task(warm.close(), name="warm-session:close")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def stop(self) -> None:
        """Close every unclaimed session (server shutdown); their reservations go with it."""
        for call_sid in list(self._warm):
            warm, timer = self._warm.pop(call_sid)
            timer.cancel()
            self._count("closed")
            self._close(warm)
        if self._closing:
            await asyncio.wait(set(self._closing), timeout=2.0)


def prewarm(
    app: web.Application,
    call_sid: str,
    persona: Any,
    *,
    caller: str,
    called: str,
    custom: Mapping[str, str],
) -> None:
    """At the webhook, for an admitted call: start its warm session if pre-warming is on.

    The values are the ones signed into the call's token, so the stream renders the same
    system instruction. A failure here is logged and leaves the call to open its own session.
    """
    warm = app.get(WARM_SESSIONS)
    if warm is None or not app[SETTINGS].prewarm or not persona.prewarm:
        return
    try:
        variables = call_variables(persona, caller=caller, called=called, custom=custom)
        warm.open(call_sid, persona, variables)
    except Exception:
        logger.exception(f"call {call_sid}: its Live API session could not be pre-opened")


def claim(app: web.Application, call_sid: str) -> WarmSession | None:
    """At the stream's start, for a registered call: its warm session, if there is one."""
    warm = app.get(WARM_SESSIONS)
    return warm.take(call_sid) if warm is not None else None


class WarmSessionsCollector(Collector):
    """``WarmSessions.counts`` as ``voicebot_warm_sessions_total{outcome}``, read at scrape time.

    Args:
        counts: The app's ``WarmSessions.counts`` (lifetime counts by outcome).
    """

    def __init__(self, counts: Counter[str]) -> None:
        self._counts = counts

    def describe(self) -> Iterable[CounterMetricFamily]:
        """The metric family, without samples."""
        return [CounterMetricFamily("voicebot_warm_sessions", _DOC, labels=["outcome"])]

    def collect(self) -> Iterable[CounterMetricFamily]:
        """The lifetime counts by outcome."""
        family = CounterMetricFamily("voicebot_warm_sessions", _DOC, labels=["outcome"])
        for outcome in OUTCOMES:
            family.add_metric([outcome], self._counts[outcome])
        return [family]


_DOC = (
    "Live API sessions pre-opened at the voice webhook, by outcome: opened, ready, failed, "
    "claimed by their stream, expired unclaimed, closed at shutdown."
)
