"""The aiohttp application: routes, shared state, startup and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web
from loguru import logger

from bot.app_keys import (
    AUTH,
    CALLS,
    FORWARDER,
    PERSONAS,
    POST_CALL,
    RECORDS,
    RESOURCES,
    SETTINGS,
    SETUP_GATE,
    VAD_MODEL,
    WARM_SESSIONS,
)
from bot.calls import WRAP_UP_SECS, CallRegistry
from bot.gc_policy import GC_POLICY
from bot.media_stream import media
from bot.metrics import METRICS, ServerMetrics, count_http_refusals, load_pricing
from bot.metrics_process import RecordsCollector
from bot.outbound.status import add_outbound_routes
from bot.persona_store import PersonaStore
from bot.post_call import PostCallSender
from bot.records.database import Database
from bot.records.writer import RETRY_FIRST_SECS, RETRY_MAX_SECS, RecordWriter
from bot.request_limits import WEBHOOK_MAX_BODY_BYTES, webhook_limits
from bot.settings import Settings, env_value
from bot.stall_probe import StallProbe
from bot.stats import STATS, lag_guard, monitor_loop_lag
from bot.stream_forward import RelayCollector, StreamForwarder, add_stream_forwarding
from bot.twilio_rest import TwilioRest
from bot.twilio_routes import add_routes
from bot.twilio_security import Authenticator
from bot.warm_sessions import TTL_SECS as WARM_TTL_SECS
from bot.warm_sessions import WarmSessions, WarmSessionsCollector
from bot.webhook_retry import RETRY_FIRST_SECS as WEBHOOK_RETRY_FIRST_SECS
from bot.webhook_retry import RETRY_MAX_SECS as WEBHOOK_RETRY_MAX_SECS
from pipelines import _compat
from pipelines.audio.batched_vad import BatchedSileroVAD
from pipelines.call.resources import ProcessResources
from pipelines.call.setup_gate import SetupGate
from pipelines.gemini.clients import GeminiClients
from pipelines.gemini.live_types import build_live_types

DEFAULT_DRAIN_SECS = 2.0
# Net new tracked objects between young GC collections (CPython default 700).


def create_app(
    settings: Settings,
    personas: PersonaStore,
    gemini: GeminiClients,
    *,
    drain_secs: float = DEFAULT_DRAIN_SECS,
    wrap_up_secs: float = WRAP_UP_SECS,
    twilio_api_base: str | None = None,
    vad_session: Any = None,
) -> web.Application:
    """Build the server application.

    Args:
        settings: Process settings.
        personas: The persona store (already loaded and validated).
        gemini: The process's shared Gemini clients.
        drain_secs: On shutdown, how long live calls may go on before they are wrapped up
            with a goodbye (``bot.calls``; multiplied by ``settings.time_scale``).
        wrap_up_secs: After that window, how long the goodbyes may take before a call still
            up is closed abnormally.
        twilio_api_base: Twilio REST base URL (tests point it at a fake).
        vad_session: A loaded Silero ONNX session to use (a test harness starting many apps
            in one process shares one); None: the app loads its own at start.
    """
    # The installed Pipecat/google-genai must be the ones our private accesses were written for
    # (a clear CompatError otherwise).
    _compat.check()
    # Every POST here is a Twilio webhook: bodies capped, read in bounded time, and refused on
    # the headers alone when unsigned (bot.request_limits).
    app = web.Application(middlewares=[webhook_limits], client_max_size=WEBHOOK_MAX_BODY_BYTES)
    app[SETTINGS] = settings
    app[AUTH] = Authenticator(settings)
    # Streams whose call another process admitted are relayed there (bot.stream_forward).
    app[FORWARDER] = StreamForwarder.from_settings(settings, app[AUTH])
    add_stream_forwarding(app, app[FORWARDER])
    app[CALLS] = CallRegistry.from_settings(settings)
    # Prometheus metrics in an app-owned registry, served on the ops listener (bot.ops).
    app[METRICS] = ServerMetrics(load_pricing(settings.pricing_file), STATS)
    app[CALLS].metrics = app[METRICS]
    app[METRICS].registry.register(RelayCollector(app[FORWARDER].stats))
    count_http_refusals(app, app[METRICS])
    lag_limit_ms = settings.lag_guard_ms
    if lag_limit_ms > 0:
        app[CALLS].guard = lambda: lag_guard(STATS, lag_limit_ms)
    app[PERSONAS] = personas
    app[SETUP_GATE] = SetupGate()
    app[VAD_MODEL] = BatchedSileroVAD(session=vad_session)
    # Call records (bot.records): written off the calls' path; absent when the URL is off.
    if (records_url := settings.records_url) is not None:
        app[RECORDS] = RecordWriter(
            Database(records_url),
            retention_days=settings.records_retention_days,
            numbers=settings.record_numbers,
            retry_first_secs=RETRY_FIRST_SECS * settings.time_scale,
            retry_max_secs=RETRY_MAX_SECS * settings.time_scale,
        )
        app[METRICS].registry.register(RecordsCollector(app[RECORDS].stats))
    # Personas' post-call webhooks (bot.post_call): queued at a call's end, sent off its path.
    post_call_counter = app[METRICS].post_call_webhooks
    app[POST_CALL] = PostCallSender(
        env_value,
        numbers=settings.record_numbers,
        retry_first_secs=WEBHOOK_RETRY_FIRST_SECS * settings.time_scale,
        retry_max_secs=WEBHOOK_RETRY_MAX_SECS * settings.time_scale,
        on_outcome=lambda persona, outcome: post_call_counter.labels(persona, outcome).inc(),
    )
    # Live API sessions opened at the voice webhook, taken by their streams (bot.warm_sessions).
    app[WARM_SESSIONS] = WarmSessions(
        gemini,
        app[CALLS].release,
        ttl_secs=WARM_TTL_SECS * settings.time_scale,
        gate=app[SETUP_GATE],  # warm opens are calls' setups: they take turns too
    )
    app[METRICS].registry.register(WarmSessionsCollector(app[WARM_SESSIONS].counts))
    add_routes(app)
    add_outbound_routes(app)  # outbound calls' status callbacks (bot.outbound.status)
    app.router.add_get("/twilio/media", media)
    # /stats is served by the operations listener only (bot.ops), never here.

    async def shared_resources(app: web.Application) -> AsyncIterator[None]:
        # The VAD model loads once, off the event loop, before the first call (the batched
        # detector's tick task then runs while calls with local VAD are up).
        await asyncio.to_thread(app[VAD_MODEL].load)
        # google-genai's Live types build their validators here, not in the first call's path.
        await asyncio.to_thread(build_live_types)
        for api_version in {p.api_version() for p in personas.current.personas.values()}:
            gemini.get(api_version)
        session = aiohttp.ClientSession()
        rest = None
        token = (
            settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else None
        )
        if settings.twilio_account_sid and token:
            rest = TwilioRest(
                session,
                settings.twilio_account_sid,
                token,
                twilio_api_base or settings.twilio_api_base_url,
            )
        app[RESOURCES] = ProcessResources(
            gemini=gemini,
            setup_gate=app[SETUP_GATE],
            vad_model=app[VAD_MODEL],
            metrics=STATS,
            call_metrics=app[METRICS].call,
            rest=rest,
            call_ready=lambda: GC_POLICY.call_ready(len(app[CALLS])),
            session_failed=app[CALLS].session_failed,
            turn_ended=app[CALLS].turn_ended,  # the calls page's live lines
            time_scale=settings.time_scale,
            http=session,  # persona HTTP tools (pipelines.tools) share it
            env_value=env_value,  # their {env: NAME} headers
        )
        await personas.start()
        records = app.get(RECORDS)
        if records is not None:
            records.start()  # migrates the schema first, retrying while the database is down
        app[POST_CALL].start()
        lag_task = asyncio.create_task(monitor_loop_lag(STATS), name="stats:loop-lag")
        probe = StallProbe(STATS.slow_callbacks.add_secs) if settings.stall_probe else None
        if probe is not None and not probe.install():
            logger.warning("VOICEBOT_STALL_PROBE: the event loop is not asyncio's own; no probe")
        if STATS.gc_callback not in gc.callbacks:
            gc.callbacks.append(STATS.gc_callback)
        GC_POLICY.start()
        try:
            yield
        finally:
            if probe is not None:
                probe.uninstall()
            GC_POLICY.stop()
            if STATS.gc_callback in gc.callbacks:
                gc.callbacks.remove(STATS.gc_callback)
            lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lag_task
            await personas.stop()
            await app[WARM_SESSIONS].stop()
            await session.close()
            await app[POST_CALL].stop()  # after the drain: the last calls' records are queued
            if records is not None:
                await records.stop()  # after the drain: the last calls' records are queued
                await records.database.close()

    async def drain(app: web.Application) -> None:
        calls = app[CALLS]
        if len(calls):
            logger.info(f"shutting down: draining {len(calls)} call(s) for up to {drain_secs} s")
        await calls.drain(drain_secs, wrap_up_secs)

    app.cleanup_ctx.append(shared_resources)
    app.on_shutdown.append(drain)
    return app
