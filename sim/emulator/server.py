"""`LiveEmulator`: the aiohttp server that owns the TLS site, sessions and shared state."""

from __future__ import annotations

import asyncio
import itertools
import ssl
import time
import weakref
from pathlib import Path
from typing import Any

from aiohttp import web
from loguru import logger

from sim.emulator import protocol, rest, voices
from sim.emulator.config import EmulatorConfig, FaultPlan
from sim.emulator.recorder import Recorder
from sim.emulator.session import Conversation, LiveSession
from sim.emulator.stats import LoopLagSampler
from sim.emulator.tls import TlsMaterial

MAX_CLIENT_MESSAGE_BYTES = 16 * 1024 * 1024
SHUTDOWN_SECS = 5.0


class LiveEmulator:
    """An emulator of the Gemini Live API (BidiGenerateContent) on loopback, over TLS.

    Use ``async with LiveEmulator(...) as emu:`` or ``await emu.start()`` / ``await
    emu.stop()``. Point the SDK at it with ``HttpOptions(base_url=emu.url,
    async_client_args={"ssl": emu.client_ssl_context()})``.

    Args:
        config: Reply behaviour (voice, think time, pacing, scripted tool calls).
        faults: Failures to inject.
        host: Interface to bind.
        port: Port to bind; 0 picks a free one.
        record_path: Append every client message (audio replaced by its length) as JSON lines.

    Attributes:
        url: ``https://HOST:PORT`` once started.
        port: The bound port once started.
        ca_file: PEM of the CA that signed the server certificate (removed on stop).
        recordings: Session id -> recorded client messages (if ``config.record_in_memory``).
        closes: ``(session id, code, reason)`` for every close the emulator initiated.
        sessions_total: Sessions that completed setup.
        active_sessions: Sessions open now (setup completed).
        lag: The event-loop lag sampler (``lag.summary()``).
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        faults: FaultPlan | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        record_path: Path | None = None,
    ) -> None:
        self.config = config or EmulatorConfig()
        self.faults = faults or FaultPlan()
        self.host = host
        self.port = port
        self.url = ""
        self.recorder = Recorder(record_path, in_memory=self.config.record_in_memory)
        self.closes: list[tuple[str, int, str]] = []
        self.sessions_total = 0
        self.refused_connects = 0  # FaultPlan.refuse_connects so far
        self.lag = LoopLagSampler()
        self._tls: TlsMaterial | None = None
        self._runner: web.AppRunner | None = None
        self._sessions: set[LiveSession] = set()
        # handle -> (snapshot, issued at, the issuing connection, weakly: ended ones go)
        self._handles: dict[str, tuple[Conversation, float, weakref.ref[LiveSession]]] = {}
        self._ids = itertools.count(1)

    @property
    def ca_file(self) -> Path:
        """The CA certificate clients must trust (only valid while started)."""
        if self._tls is None:
            raise RuntimeError("LiveEmulator.ca_file: the emulator is not started; await start()")
        return self._tls.ca_file

    @property
    def recordings(self) -> dict[str, list[dict[str, Any]]]:
        """Recorded client messages per session id."""
        return self.recorder.sessions

    @property
    def active_sessions(self) -> int:
        """Sessions past setup and still open."""
        return sum(1 for s in self._sessions if s.accepted and s.close_code is None)

    def client_ssl_context(self) -> ssl.SSLContext:
        """An SSL context that trusts this emulator's CA only."""
        if self._tls is None:
            raise RuntimeError("LiveEmulator.client_ssl_context(): not started; await start()")
        return self._tls.client_context()

    async def __aenter__(self) -> LiveEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> str:
        """Generate the TLS material, bind, and return the base URL (``https://host:port``)."""
        self._tls = await asyncio.to_thread(TlsMaterial)
        await asyncio.to_thread(self._preload_voices)
        app = web.Application()
        app.router.add_get("/stats", self._stats)
        app.router.add_get("/{version:v1|v1beta|v1alpha}/models", self._list_models)
        app.router.add_get("/{version:v1|v1beta|v1alpha}/models/{model}", self._get_model)
        app.router.add_get("/{tail:.*}", self._websocket)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, self.host, self.port, ssl_context=self._tls.server_context()
        )
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.port
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"https://{host}:{self.port}"
        self.recorder.start()
        self.lag.start()
        logger.info("emulator: Gemini Live API emulator listening on {}", self.url)
        return self.url

    async def stop(self) -> None:
        """Close every session (1001 going away), stop serving, remove the CA file."""
        sessions = [s for s in self._sessions if s.close_code is None]
        if sessions:
            await asyncio.wait(
                [
                    asyncio.create_task(s.close(1001, "server shutting down"), name=f"close:{s.id}")
                    for s in sessions
                ],
                timeout=SHUTDOWN_SECS,
            )
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.lag.stop()
        await self.recorder.stop()
        summary = self.lag.summary()
        logger.info(
            "emulator: stopped after {} sessions; loop lag p50 {} ms, p99 {} ms, max {} ms",
            self.sessions_total, summary["p50_ms"], summary["p99_ms"], summary["max_ms"],
        )  # fmt: skip
        if self._tls is not None:
            self._tls.cleanup()
            self._tls = None

    def stats(self) -> dict[str, Any]:
        """Sessions and event-loop lag, as served on ``GET /stats``."""
        return {
            "sessions_active": self.active_sessions,
            "sessions_total": self.sessions_total,
            "closes": len(self.closes),
            "loop_lag": self.lag.summary(),
        }

    # Used by sessions

    def session_accepted(self, session: LiveSession) -> None:
        """Count a session that completed setup."""
        self.sessions_total += 1

    def store_handle(self, handle: str, conv: Conversation, origin: LiveSession) -> None:
        """Remember a conversation snapshot under a resumption handle, and its connection."""
        now = time.monotonic()
        if len(self._handles) > 10_000:
            ttl = self.faults.handle_ttl
            self._handles = {h: v for h, v in self._handles.items() if now - v[1] < ttl}
        self._handles[handle] = (conv, now, weakref.ref(origin))

    def restore_handle(self, handle: str) -> tuple[Conversation, LiveSession | None] | None:
        """The conversation saved under a handle and the connection that issued it.

        ``None`` if the handle is unknown or stale.
        """
        found = self._handles.get(handle)
        if found is None or self.faults.forget_handles:
            return None
        conv, at, origin = found
        if time.monotonic() - at > self.faults.handle_ttl:
            return None
        return conv.copy(), origin()

    # HTTP

    def _preload_voices(self) -> None:
        cfg = self.config
        voices.wav_reply(cfg.greeting_wav, cfg.chunk_ms)
        voices.wav_reply(cfg.greeting_wav, cfg.chunk_ms, cfg.goodbye_secs)
        voices.tone_reply(cfg.tone_secs, cfg.chunk_ms)
        voices.wav_reply(cfg.greeting_wav, cfg.chunk_ms, cfg.announce_secs)
        if cfg.voice == "wav":
            voices.wav_reply(cfg.answer_wav, cfg.chunk_ms)

    async def _stats(self, request: web.Request) -> web.Response:
        body = self.stats()
        if request.query.get("reset"):
            self.lag.reset()
        return web.json_response(body)

    def _rest_key_error(self, request: web.Request) -> web.Response | None:
        """Google's REST answer to a missing or wrong key (the Live socket's rules), or None."""
        key = request.headers.get("x-goog-api-key") or request.query.get("key") or ""
        if not key:
            return web.json_response(rest.error_body(403, protocol.MISSING_KEY), status=403)
        if self.config.api_key is not None and key != self.config.api_key:
            return web.json_response(rest.error_body(400, protocol.BAD_KEY), status=400)
        return None

    async def _list_models(self, request: web.Request) -> web.Response:
        """``GET /{version}/models``: the Live models, as ``models.list`` pages them."""
        refused = self._rest_key_error(request)
        if refused is not None:
            return refused
        return web.json_response(rest.models_page(request.query.get("pageSize")))

    async def _get_model(self, request: web.Request) -> web.Response:
        """``GET /{version}/models/{model}``: one model, or Google's 404."""
        refused = self._rest_key_error(request)
        if refused is not None:
            return refused
        name, version = request.match_info["model"], request.match_info["version"]
        found = rest.model_resource(name)
        if found is None:
            missing = f"models/{name} is not found for API version {version}."
            return web.json_response(rest.error_body(404, missing), status=404)
        return web.json_response(found)

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        version = protocol.match_path(request.path)
        if version is None:
            raise web.HTTPNotFound(
                text=f"{request.path}: not a Live API endpoint; expected /ws/google.ai."
                "generativelanguage.{v1,v1beta,v1alpha}.GenerativeService.BidiGenerateContent"
            )
        key = request.headers.get("x-goog-api-key") or request.query.get("key") or ""
        if not key and request.headers.get("Authorization", "").startswith("Token "):
            key = request.headers["Authorization"].removeprefix("Token ")
        ws = web.WebSocketResponse(
            compress=False, max_msg_size=MAX_CLIENT_MESSAGE_BYTES, autoclose=True, autoping=True
        )
        await ws.prepare(request)
        session = LiveSession(self, ws, f"s{next(self._ids)}", version, key)
        self._sessions.add(session)
        try:
            await session.run()
        finally:
            self._sessions.discard(session)
            if session.accepted:
                logger.info(
                    "emulator {}: session ended ({} caller turns, {} replies, close {})",
                    session.id, session.conv.caller_turns, session.conv.replies,
                    session.close_code or ws.close_code,
                )  # fmt: skip
        return ws
