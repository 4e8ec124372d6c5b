"""Prometheus metrics: the app-owned registry, the call metrics, and the pipelines' port.

Served as ``GET /metrics`` on the operations listener (``bot.ops``). Each application owns its
``CollectorRegistry`` (``ServerMetrics.registry``) instead of the library's global one, so
several servers in one test process never collide, and a multi-process deployment can
aggregate per-process registries later.

Three sources feed it:

* ``CallRecorder``: one per call, made by ``ServerMetrics.call`` (the
  ``pipelines.ports.CallMetricsFactory`` the server hands every call). It implements
  ``pipelines.ports.CallMetrics``: latencies, barge-ins and ``clear``, handovers, reconnects,
  the Live API's closes, tokens and their estimated cost. Its label children are bound once
  per call; the per-chunk hot path (``bot_audio_sent``) is one attribute test while nothing is
  owed and the caller is quiet. Bridge latency and audio seconds go on to
  ``bot.stats.ProcessStats``.
* ``ServerMetrics.call_started`` / ``call_ended`` / ``refused``: admission and the end of a
  call (``bot.calls.CallRegistry`` calls them), with the call's bad inputs.
* ``StatsCollector`` (``bot.metrics_process``): loop lag, GC pauses, bridge latency and audio
  seconds, read from ``bot.stats.STATS`` at scrape time (one place records, ``/stats`` and
  ``/metrics`` read).

Labels are bounded: persona ids (files in the persona folder), and reasons, causes, kinds and
close codes from fixed sets (``bot.metrics_labels``: ``END_REASONS``, ``REFUSAL_CAUSES``,
``close_code_label``); never a call SID or a number.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

from aiohttp import web
from loguru import logger
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from bot.metrics_labels import bad_input_label, close_code_label, end_reason_label, refusal_label
from bot.metrics_process import StatsCollector
from bot.pricing import Pricing, PricingError
from bot.stats import STATS, ProcessStats
from pipelines.ports import LatencyRecorder

# Buckets (seconds) that fit phone calls.
SETUP_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 15.0, 30.0)
RESPONSE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
CLEAR_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0)
# While the caller speaks, bot audio after this long without any begins an answer (chunks of a
# reply come every 20-40 ms; a barge-in's clear lands within ~0.1 s of the caller's start).
ANSWER_GAP_SECS = 0.2


class ServerMetrics:
    """The server's Prometheus metrics in its own registry.

    Args:
        pricing: Model prices for the cost estimate (empty: cost stays 0).
        stats: The process counters exported at scrape time (``bot.stats.STATS``).
    """

    def __init__(self, pricing: Pricing | None = None, stats: ProcessStats = STATS) -> None:
        """Create the registry and every metric; see the class docstring for the arguments."""
        self.pricing = pricing or Pricing()
        self.stats = stats
        r = self.registry = CollectorRegistry()
        self.calls_started = Counter(
            "voicebot_calls_started", "Calls whose media stream started.", ["persona"], registry=r
        )
        self.calls_ended = Counter(
            "voicebot_calls_ended", "Calls ended, by reason.", ["persona", "reason"], registry=r
        )
        self.calls_refused = Counter(
            "voicebot_calls_refused", "Calls or requests refused, by cause.", ["cause"], registry=r
        )
        self.webhook_redirects = Counter(
            "voicebot_webhook_redirects",
            "Voice webhooks passed on to another process (<Redirect>) instead of refused, by "
            "this process's cause.",
            ["cause"],
            registry=r,
        )
        self.calls_active = Gauge(
            "voicebot_calls_active", "Calls in progress.", ["persona"], registry=r
        )
        self.setup_latency = Histogram(
            "voicebot_setup_latency_seconds",
            "Media stream start -> the Live API session ready (setupComplete).",
            ["persona"],
            buckets=SETUP_BUCKETS,
            registry=r,
        )
        self.first_audio_latency = Histogram(
            "voicebot_first_audio_latency_seconds",
            "Media stream start -> the first bot audio written to Twilio.",
            ["persona"],
            buckets=SETUP_BUCKETS,
            registry=r,
        )
        self.response_latency = Histogram(
            "voicebot_response_latency_seconds",
            "The caller's last word (local VAD, less its turn-end delay) -> the first bot "
            "audio written to Twilio after it.",
            ["persona"],
            buckets=RESPONSE_BUCKETS,
            registry=r,
        )
        self.barge_ins = Counter(
            "voicebot_barge_ins",
            "Barge-ins that cleared Twilio's playback, by what detected them.",
            ["persona", "source"],
            registry=r,
        )
        self.barge_in_clear = Histogram(
            "voicebot_barge_in_clear_seconds",
            "Barge-in detected (local VAD or the model's interrupted) -> `clear` sent to Twilio.",
            ["persona"],
            buckets=CLEAR_BUCKETS,
            registry=r,
        )
        self.handovers = Counter(
            "voicebot_gemini_handovers",
            "Planned moves to a new Live API connection, by cause (go_away, watchdog).",
            ["persona", "cause"],
            registry=r,
        )
        self.reconnects = Counter(
            "voicebot_gemini_reconnects",
            "Reconnects after an unplanned connection end (dropped) or refused reconnect.",
            ["persona", "cause"],
            registry=r,
        )
        self.gemini_closes = Counter(
            "voicebot_gemini_closes",
            "Live API connections the service ended or refused, by WebSocket close code.",
            ["persona", "code"],
            registry=r,
        )
        self.bad_input = Counter(
            "voicebot_bad_input_messages",
            "Invalid messages from Twilio's side of the media stream, by kind.",
            ["kind"],
            registry=r,
        )
        self.tokens = Counter(
            "voicebot_model_tokens",
            "Model tokens from usageMetadata, by kind and modality.",
            ["persona", "kind", "modality"],
            registry=r,
        )
        self.cost = Counter(
            "voicebot_model_cost_usd",
            "Estimated model cost in US dollars (config/pricing.yaml).",
            ["persona"],
            registry=r,
        )
        self.post_call_webhooks = Counter(
            "voicebot_post_call_webhooks",
            "Post-call webhook deliveries by outcome: delivered, failed, dropped (queue full), "
            "lost (at shutdown) (bot.post_call).",
            ["persona", "outcome"],
            registry=r,
        )
        self.tool_calls = Counter(
            "voicebot_tool_calls",
            "Persona HTTP tool calls by outcome (pipelines.tools.http_call.OUTCOMES).",
            ["persona", "tool", "outcome"],
            registry=r,
        )
        self.tool_latency = Histogram(
            "voicebot_tool_latency_seconds",
            "Persona HTTP tool calls: the model's call to the response handed back.",
            ["persona", "tool"],
            buckets=RESPONSE_BUCKETS,
            registry=r,
        )
        r.register(StatsCollector(stats))

    # the port ------------------------------------------------------------------------------

    def call(self, persona_id: str, model: str) -> CallRecorder:
        """A new call's metrics (``pipelines.ports.CallMetricsFactory``)."""
        return CallRecorder(self, persona_id, model)

    # admission and call ends (bot.calls) ---------------------------------------------------

    def call_started(self, persona_id: str) -> None:
        """A call's media stream started and was admitted."""
        self.calls_started.labels(persona_id).inc()
        self.calls_active.labels(persona_id).inc()

    def call_ended(
        self, persona_id: str, reason: str | None, bad_input: Mapping[str, int] | None = None
    ) -> None:
        """A call ended: its reason (free text, labelled by ``end_reason_label``), bad inputs."""
        self.calls_ended.labels(persona_id, end_reason_label(reason)).inc()
        self.calls_active.labels(persona_id).dec()
        for kind, count in (bad_input or {}).items():
            if count > 0:
                self.bad_input.labels(bad_input_label(kind)).inc(count)

    def refused(self, cause: str) -> None:
        """A call or a Twilio-facing request was refused (``cause`` from ``REFUSAL_CAUSES``)."""
        self.calls_refused.labels(refusal_label(cause)).inc()

    def redirected(self, cause: str) -> None:
        """A voice webhook answered with a ``<Redirect>`` to another process (``cause`` here)."""
        self.webhook_redirects.labels(refusal_label(cause)).inc()


class CallRecorder:
    """One call's metrics (``pipelines.ports.CallMetrics``); see the module docstring."""

    def __init__(
        self,
        metrics: ServerMetrics,
        persona_id: str,
        model: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Bind the call's label children; the clock starts (the media stream's start)."""
        self._clock = clock
        self._m = metrics
        self._persona = persona_id
        self._prices = metrics.pricing.for_model(model)
        self._stats = metrics.stats
        self._started = clock()
        self._setup = metrics.setup_latency.labels(persona_id)
        self._first = metrics.first_audio_latency.labels(persona_id)
        self._response = metrics.response_latency.labels(persona_id)
        self._clear = metrics.barge_in_clear.labels(persona_id)
        self._cost = metrics.cost.labels(persona_id)
        self._ready_seen = False
        self._first_sent = False
        self._owed_since: float | None = None  # a reply is owed since the caller went quiet
        self._pending = True  # the first audio, or a reply, is awaited (the hot-path test)
        self._caller_speaking = False
        self._audio_at = 0.0  # while the caller speaks: the last bot chunk (or their start)
        self._answer_at: float | None = None  # bot audio began again while they spoke
        self._barge_at: float | None = None
        self._barge_source = ""
        self.tokens: dict[tuple[str, str], int] = {}
        self.cost_usd = 0.0

    # BridgeMetrics: to the process counters --------------------------------------------

    @property
    def bridge_in(self) -> LatencyRecorder:
        """The process's bridge-in histogram."""
        return self._stats.bridge_in

    @property
    def bridge_out(self) -> LatencyRecorder:
        """The process's bridge-out histogram."""
        return self._stats.bridge_out

    def add_model_audio_secs(self, secs: float) -> None:
        """Model audio received."""
        self._stats.add_model_audio_secs(secs)

    def add_twilio_audio_secs(self, secs: float) -> None:
        """Bot audio written to Twilio."""
        self._stats.add_twilio_audio_secs(secs)

    def add_caller_audio_secs(self, secs: float) -> None:
        """Caller audio received."""
        self._stats.add_caller_audio_secs(secs)

    # call events -----------------------------------------------------------------------

    def session_ready(self) -> None:
        """The first Live API session of the call is ready: setup latency."""
        if not self._ready_seen:
            self._ready_seen = True
            self._setup.observe(self._clock() - self._started)

    def caller_turn_ended(self, lag_secs: float) -> None:
        """A reply is owed from when the caller went quiet (``lag_secs`` ago).

        The model often answers before the local turn ends (its own VAD is quicker than our
        stop delay and the turn strategy's wait): an answer that began after the caller's last
        word is timed from that word at once. One that began before it was spoken over, and
        is not a response time (as in the call's record, ``pipelines.call.journal``).
        """
        quiet_at = self._clock() - lag_secs
        self._caller_speaking = False
        answer_at, self._answer_at = self._answer_at, None
        if answer_at is None:
            self._owed_since = quiet_at
            self._pending = True
            return
        if answer_at >= quiet_at:
            self._response.observe(answer_at - quiet_at)
        self._pending = not self._first_sent

    def caller_started(self) -> None:
        """The caller speaks again: no reply is owed until their turn ends.

        Bot audio is watched while they speak: the first chunk after a pause of
        ``ANSWER_GAP_SECS`` begins an answer (what is still playing as they start is not one).
        """
        self._owed_since = None
        self._caller_speaking = True
        self._audio_at = self._clock()
        self._answer_at = None
        self._pending = True

    def bot_audio_sent(self) -> None:
        """Bot audio reached Twilio: the first audio and the owed reply are timed."""
        if not self._pending:
            return
        now = self._clock()
        if not self._first_sent:
            self._first_sent = True
            self._first.observe(now - self._started)
        if self._caller_speaking:
            if now - self._audio_at >= ANSWER_GAP_SECS:
                self._answer_at = now
                self._pending = False  # timed when their turn ends
            self._audio_at = now
            return
        if self._owed_since is not None:
            self._response.observe(now - self._owed_since)
            self._owed_since = None
        self._pending = False

    def barge_in(self, source: str) -> None:
        """An interruption was detected (the first detection of a barge-in counts)."""
        if self._barge_at is None:
            self._barge_at = self._clock()
            self._barge_source = source

    def clear_done(self, sent: bool) -> None:
        """The output handled the interruption: a sent ``clear`` is a barge-in."""
        at, self._barge_at = self._barge_at, None
        if sent and at is not None:
            self._m.barge_ins.labels(self._persona, self._barge_source).inc()
            self._clear.observe(self._clock() - at)

    def handover(self, cause: str) -> None:
        """A planned move to a new connection."""
        self._m.handovers.labels(self._persona, cause).inc()

    def reconnect(self, cause: str) -> None:
        """A reconnect after an unplanned end."""
        self._m.reconnects.labels(self._persona, cause).inc()

    def gemini_closed(self, code: int | None) -> None:
        """The Live API ended or refused a connection."""
        self._m.gemini_closes.labels(self._persona, close_code_label(code)).inc()

    def add_tokens(self, kind: str, modality: str, count: int) -> None:
        """Tokens of one usage report, and their estimated cost."""
        self._m.tokens.labels(self._persona, kind, modality).inc(count)
        key = (kind, modality)
        self.tokens[key] = self.tokens.get(key, 0) + count
        usd = self._prices.per_token(kind, modality) * count
        if usd:
            self.cost_usd += usd
            self._cost.inc(usd)

    def tool_call(self, tool: str, outcome: str, latency_secs: float) -> None:
        """A persona HTTP tool call ended (tool names come from persona files: bounded)."""
        self._m.tool_calls.labels(self._persona, tool, outcome).inc()
        self._m.tool_latency.labels(self._persona, tool).observe(latency_secs)


METRICS: web.AppKey[ServerMetrics] = web.AppKey("metrics", ServerMetrics)
# HTTP refusals of Twilio-facing requests (bot.request_limits, bot.twilio_routes, the media
# upgrade), counted from the response status alone: no hook in the code that refuses.
_HTTP_REFUSALS = {403: "forbidden", 413: "too_large", 408: "too_slow"}


def load_pricing(path: Path) -> Pricing:
    """The prices at ``path``; no prices (cost stays 0) when it is missing or invalid (logged)."""
    try:
        return Pricing.load(path)
    except FileNotFoundError:
        logger.warning(
            f"pricing: {path} not found; voicebot_model_cost_usd stays 0 "
            "(set VOICEBOT_PRICING_FILE or create it, see config/pricing.yaml)"
        )
    except (OSError, PricingError) as e:
        logger.error(f"pricing: {e}; voicebot_model_cost_usd stays 0 until it is fixed")
    return Pricing()


def count_http_refusals(app: web.Application, metrics: ServerMetrics) -> None:
    """Count 403/413/408 answers on ``/twilio/`` paths as refusals (``on_response_prepare``)."""

    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        cause = _HTTP_REFUSALS.get(response.status)
        if cause is not None and request.path.startswith("/twilio/"):
            metrics.refused(cause)

    app.on_response_prepare.append(on_prepare)


def add_metrics_route(app: web.Application, metrics: ServerMetrics) -> None:
    """``GET /metrics``: the registry in Prometheus' text format (or OpenMetrics if asked)."""

    async def get_metrics(request: web.Request) -> web.Response:
        accept = request.headers.get("Accept", "")
        encoder, content_type = choose_encoder(accept)
        body = encoder(metrics.registry)
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    app.router.add_get("/metrics", get_metrics)
