"""The aiohttp application: routes, shared state, startup and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from loguru import logger

from bot.app_keys import AUTH, CALLS, PERSONAS, RESOURCES, SETTINGS, SETUP_GATE, VAD_MODEL
from bot.calls import WRAP_UP_SECS, CallRegistry
from bot.gc_policy import GC_POLICY
from bot.media_stream import media
from bot.persona_store import PersonaStore
from bot.settings import Settings
from bot.stall_probe import StallProbe
from bot.stats import STATS, add_stats_routes, lag_guard, monitor_loop_lag
from bot.twilio_rest import TwilioRest
from bot.twilio_routes import add_routes
from bot.twilio_security import Authenticator
from pipelines import _compat
from pipelines.audio.batched_vad import BatchedSileroVAD
from pipelines.call.pipeline import ProcessResources
from pipelines.call.setup_gate import SetupGate
from pipelines.gemini.clients import GeminiClients

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
    """
    # The installed Pipecat/google-genai must be the ones our private accesses were written for
    # (a clear CompatError otherwise).
    _compat.check()
    app = web.Application()
    app[SETTINGS] = settings
    app[AUTH] = Authenticator(settings)
    app[CALLS] = CallRegistry.from_settings(settings)
    lag_limit_ms = settings.lag_guard_ms
    if lag_limit_ms > 0:
        app[CALLS].guard = lambda: lag_guard(STATS, lag_limit_ms)
    app[PERSONAS] = personas
    app[SETUP_GATE] = SetupGate()
    app[VAD_MODEL] = BatchedSileroVAD()
    add_routes(app)
    app.router.add_get("/twilio/media", media)
    add_stats_routes(app, lambda: len(app[CALLS]))

    async def shared_resources(app: web.Application) -> AsyncIterator[None]:
        # The VAD model loads once, off the event loop, before the first call (the batched
        # detector's tick task then runs while calls with local VAD are up).
        await asyncio.to_thread(app[VAD_MODEL].load)
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
                **({"base_url": twilio_api_base} if twilio_api_base else {}),
            )
        app[RESOURCES] = ProcessResources(
            gemini=gemini,
            setup_gate=app[SETUP_GATE],
            vad_model=app[VAD_MODEL],
            metrics=STATS,
            rest=rest,
            call_ready=GC_POLICY.call_ready,
            session_failed=app[CALLS].session_failed,
            time_scale=settings.time_scale,
        )
        await personas.start()
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
            await session.close()

    async def drain(app: web.Application) -> None:
        calls = app[CALLS]
        if len(calls):
            logger.info(f"shutting down: draining {len(calls)} call(s) for up to {drain_secs} s")
        await calls.drain(drain_secs, wrap_up_secs)

    app.cleanup_ctx.append(shared_resources)
    app.on_shutdown.append(drain)
    return app
