"""What tests of a voice bot need, shipped with the lab (like ``pipecat.tests.utils``).

Plain async context managers and helpers, no pytest: the test suite's fixtures
(``tests/conftest.py``) are thin wrappers over them, and any other harness can use them too.

- :func:`running_emulator`: the Live API emulator on loopback TLS.
- :func:`running_server`: the real ``voicebot`` app (aiohttp, Pipecat, google-genai) on a
  loopback port, talking to an emulator, with its operations listener (``/stats``) on another
  (:attr:`RunningServer.ops_url`); :meth:`RunningServer.call` places a simulated Twilio call to
  it and returns the :class:`~sim.caller.result.CallResult`.
- :func:`fake_twilio_rest`: a stand-in for Twilio's REST API that records hang-ups and redirects.
- :func:`scripted_bot_app`: a tiny Twilio-side app that answers like the server (TwiML, a 0.4 s
  greeting, a mark) for tests of the caller itself.
- :func:`free_port`, :func:`free_port_block` (from :mod:`sim.ports`): ports for servers whose
  address must be known before they start.
- :func:`wait_until`; google-genai helpers (:func:`genai_client`, :func:`collect_turn`,
  :func:`audio_of`, :func:`send_speech`, :func:`caller_hello_16k`).

This is the one ``sim`` module that imports ``bot``: it starts the real server in-process.
"""

from __future__ import annotations

import asyncio
import audioop
import base64
import contextlib
import functools
import json
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web
from google import genai
from google.genai import types

from bot.app import create_app
from bot.app_keys import CALLS
from bot.calls import CallRegistry
from bot.ops import OpsListener
from bot.persona_store import PersonaStore
from bot.settings import Settings
from pipelines.audio.batched_vad import load_silero_session
from pipelines.gemini.service import GeminiClients
from sim.caller.driver import place_call
from sim.caller.plan import CallPlan
from sim.caller.result import CallResult
from sim.emulator import EmulatorConfig, FaultPlan, LiveEmulator
from sim.emulator.config import ASSETS_DIR
from sim.ports import free_port as free_port
from sim.ports import free_port_block as free_port_block

# Tests' default think time: quick enough for short tests, long enough to barge in on a reply.
TEST_THINK_MS = 300
# Seconds the server waits for calls to finish when a test's server stops.
TEST_DRAIN_SECS = 0.5
# ... and how long the goodbyes of calls still up then may take (a test that stops its server
# with calls up is done with them; tests of the drain itself call ``CallRegistry.drain``).
TEST_WRAP_UP_SECS = 1.0
# 40 ms of a loud square wave, base64 mu-law: audible bot audio for scripted apps.
TONE = base64.b64encode(bytes([0x00, 0x80]) * 160).decode()
# What a scripted_bot_app saw: the webhook form, the start message, event kinds, the mark back.
SEEN = web.AppKey("seen", dict)


async def wait_until(predicate: Callable[[], bool], timeout_secs: float = 2.0) -> bool:
    """Poll ``predicate`` every 20 ms until it holds (True) or ``timeout_secs`` pass (False)."""
    deadline = asyncio.get_running_loop().time() + timeout_secs
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


@contextlib.asynccontextmanager
async def running_emulator(
    config: EmulatorConfig | None = None, faults: FaultPlan | None = None
) -> AsyncIterator[LiveEmulator]:
    """A started emulator, stopped on exit.

    Args:
        config: Emulator behaviour; None: its defaults with a ``TEST_THINK_MS`` think time.
        faults: Faults to inject, if any.
    """
    emu = LiveEmulator(config or EmulatorConfig(think_ms=TEST_THINK_MS), faults)
    await emu.start()
    try:
        yield emu
    finally:
        await emu.stop()


async def _serve(app: web.Application, port: int = 0) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on a loopback port (0: a free one); return its runner and base URL."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


@dataclass
class RunningServer:
    """The real server under test, on a loopback port.

    Attributes:
        url: The public listener (webhooks, media streams, health).
        app: The public application.
        emulator: The Live API it talks to.
        ops_url: The operations listener (``/stats``, health); empty when ``ops_listen="off"``.
    """

    url: str
    app: web.Application
    emulator: LiveEmulator
    ops_url: str = ""

    @property
    def calls(self) -> CallRegistry:
        """Calls in progress (the app's call registry)."""
        return self.app[CALLS]

    async def call(self, plan: CallPlan | None = None, **kwargs: Any) -> CallResult:
        """Place one simulated Twilio call to this server (``sim.caller.place_call`` arguments)."""
        return await place_call(self.url, plan, **kwargs)


@functools.cache
def shared_vad_session() -> Any:
    """One Silero ONNX session for every server this process starts.

    A session is read-only and safe to run from several threads; loading one costs ~30 ms of
    CPU, for each of the hundreds of servers a test run starts.
    """
    return load_silero_session()


@contextlib.asynccontextmanager
async def running_server(
    emulator: LiveEmulator,
    personas: Path,
    *,
    twilio_api_base: str | None = None,
    drain_secs: float = TEST_DRAIN_SECS,
    wrap_up_secs: float = TEST_WRAP_UP_SECS,
    port: int = 0,
    **settings: Any,
) -> AsyncIterator[RunningServer]:
    """The real app, served on loopback and pointed at ``emulator``; cleaned up on exit.

    Args:
        emulator: The Live API the server talks to.
        personas: The persona folder.
        twilio_api_base: Base URL of the Twilio REST API (e.g. a :func:`fake_twilio_rest`).
        drain_secs: How long stopping waits for calls in progress.
        wrap_up_secs: Then how long their goodbyes may take before they are closed.
        port: The public listener's port (0: a free one; a test that must know its
            ``public_url`` before the server starts passes one from :func:`free_port`).
        **settings: :class:`bot.settings.Settings` fields. ``lag_guard_ms`` defaults to 0: the
            overload guard reads process-wide loop-lag stats, and a stall in an earlier test must
            not turn callers away here. ``ops_listen`` defaults to ``"0"`` (a free loopback
            port for the operations listener). ``database_url`` defaults to ``"off"`` (no call
            records; a test of them passes a ``sqlite:///`` URL in its tmp_path).
    """
    settings.setdefault("lag_guard_ms", 0)
    settings.setdefault("ops_listen", "0")
    settings.setdefault("database_url", "off")  # no records unless the test asks for them
    config = Settings(personas_dir=personas, **settings)
    app = create_app(
        config,
        PersonaStore(personas),
        GeminiClients("test-key", emulator.url, emulator.ca_file),
        drain_secs=drain_secs,
        wrap_up_secs=wrap_up_secs,
        twilio_api_base=twilio_api_base,
        vad_session=await asyncio.to_thread(shared_vad_session),
    )
    runner, url = await _serve(app, port)
    ops = OpsListener(app, config, address) if (address := config.ops_address) else None
    try:
        ops_url = await ops.start() if ops else ""
        yield RunningServer(url, app, emulator, ops_url)
    finally:
        await runner.cleanup()
        if ops is not None:
            await ops.stop()


@dataclass
class FakeTwilioRest:
    """Records Twilio REST requests (hang-ups, redirects): path, form and Authorization."""

    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)


@contextlib.asynccontextmanager
async def fake_twilio_rest() -> AsyncIterator[FakeTwilioRest]:
    """A loopback stand-in for ``POST /2010-04-01/Accounts/{account}/Calls/{sid}.json``."""
    app = web.Application()
    fake = FakeTwilioRest(url="")

    async def update_call(request: web.Request) -> web.Response:
        form = await request.post()
        fake.requests.append(
            {"path": request.path, "form": dict(form), "auth": request.headers.get("Authorization")}
        )
        return web.json_response({"sid": request.match_info["sid"], "status": "completed"})

    app.router.add_post("/2010-04-01/Accounts/{account}/Calls/{sid}.json", update_call)
    runner, fake.url = await _serve(app)
    try:
        yield fake
    finally:
        await runner.cleanup()


def scripted_bot_app(auth_token: str | None = None) -> web.Application:
    """A Twilio-side app that answers like the server, for tests of the caller and load tester.

    ``POST /twilio/voice`` returns ``<Connect><Stream>`` TwiML (with a ``persona`` parameter from
    ``?persona=``); on ``start`` the stream sends 0.4 s of :data:`TONE` and a mark ``end``. What it
    saw is in ``app[SEEN]``. With ``auth_token``, unsigned webhooks and upgrades get 403.
    """
    from twilio.request_validator import RequestValidator

    validator = RequestValidator(auth_token or "")
    seen: dict[str, object] = {}

    async def voice(request: web.Request) -> web.Response:
        form = dict(await request.post())
        seen["form"] = form
        if auth_token and not validator.validate(
            str(request.url), form, request.headers.get("X-Twilio-Signature", "")
        ):
            raise web.HTTPForbidden(text="bad signature")
        host = request.host
        return web.Response(
            content_type="text/xml",
            text=f'<Response><Connect><Stream url="ws://{host}/twilio/media">'
            f'<Parameter name="persona" value="{request.query.get("persona", "none")}"/>'
            "</Stream></Connect><Say>Sorry, goodbye.</Say></Response>",
        )

    async def media(request: web.Request) -> web.WebSocketResponse:
        sig = request.headers.get("X-Twilio-Signature", "")
        url = f"ws://{request.host}/twilio/media"
        if auth_token and not validator.validate(url, {}, sig):
            raise web.HTTPForbidden(text="bad upgrade signature")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = ""

        async def speak(n: int) -> None:
            for _ in range(n):
                await ws.send_str(
                    json.dumps({"event": "media", "streamSid": sid, "media": {"payload": TONE}})
                )
                await asyncio.sleep(0.04)
            await ws.send_str(
                json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": "end"}})
            )

        talking: asyncio.Task[None] | None = None
        async for msg in ws:
            ev = json.loads(msg.data)
            events = seen.setdefault("events", [])
            assert isinstance(events, list)
            events.append(ev["event"])
            if ev["event"] == "start":
                sid = ev["streamSid"]
                seen["start"] = ev["start"]
                talking = asyncio.create_task(speak(10), name="scripted-bot:greeting")
            elif ev["event"] == "mark":
                seen["mark_back"] = ev["mark"]["name"]
            elif ev["event"] == "stop":
                break
        if talking:
            talking.cancel()
        return ws

    app = web.Application()
    app.router.add_post("/twilio/voice", voice)
    app.router.add_get("/twilio/media", media)
    app[SEEN] = seen
    return app


def genai_client(emu: LiveEmulator, api_version: str | None = None) -> genai.Client:
    """An unmodified google-genai client pointed at the emulator (trusting its CA only)."""
    opts = types.HttpOptions(
        base_url=emu.url,
        api_version=api_version,
        async_client_args={"ssl": emu.client_ssl_context()},
    )
    return genai.Client(api_key="test-key", http_options=opts)


async def collect_turn(session: genai.live.AsyncSession) -> list[types.LiveServerMessage]:
    """Every message of the session's next turn (``receive()`` stops at ``turnComplete``)."""
    out = []
    async for message in session.receive():
        out.append(message)
    return out


def audio_of(messages: list[types.LiveServerMessage]) -> bytes:
    """The reply audio (24 kHz PCM16) in ``messages``, joined."""
    return b"".join(m.data or b"" for m in messages)


async def send_speech(
    session: genai.live.AsyncSession, pcm: np.ndarray, chunk_ms: int = 20
) -> None:
    """Send 16 kHz PCM16 as realtime audio in ``chunk_ms`` chunks, as fast as the socket takes."""
    step = 16 * chunk_ms
    for i in range(0, pcm.size, step):
        blob = types.Blob(data=pcm[i : i + step].tobytes(), mime_type="audio/pcm;rate=16000")
        await session.send_realtime_input(audio=blob)


def caller_hello_16k() -> np.ndarray:
    """``sim/assets/caller_hello.wav`` (mu-law 8 kHz, format tag 7) as 16 kHz PCM16."""
    import soxr

    data = (ASSETS_DIR / "caller_hello.wav").read_bytes()
    pos = 12
    while data[pos : pos + 4] != b"data":
        pos += 8 + struct.unpack("<I", data[pos + 4 : pos + 8])[0]
    size = struct.unpack("<I", data[pos + 4 : pos + 8])[0]
    pcm8k = np.frombuffer(audioop.ulaw2lin(data[pos + 8 : pos + 8 + size], 2), np.int16)
    out = soxr.resample(pcm8k.astype(np.float32) / 32768, 8000, 16000)
    return (np.clip(out, -1, 1) * 32767).astype(np.int16)
