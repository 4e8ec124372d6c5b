"""Fixtures for end-to-end tests: the real server, the Live API emulator, a fake Twilio REST API.

Everything runs in the test's event loop over loopback: the real aiohttp server, the real
google-genai SDK and the real Pipecat service talk to the emulator over TLS, and the
simulated caller talks to the server like Twilio.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bot.app import create_app
from bot.app_keys import CALLS
from bot.persona_store import PersonaStore
from bot.settings import Settings
from pipelines.gemini_service import GeminiClients
from sim.emulator import EmulatorConfig, FaultPlan, LiveEmulator

TEST_PERSONAS = Path(__file__).parent / "personas"


@dataclass
class RunningServer:
    """A server under test."""

    url: str
    app: web.Application
    emulator: LiveEmulator

    @property
    def calls(self):
        return self.app[CALLS]


@dataclass
class FakeTwilioRest:
    """Records Twilio REST requests (hang-ups, redirects)."""

    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)


EmulatorFactory = Callable[..., Awaitable[LiveEmulator]]
ServerFactory = Callable[..., Awaitable[RunningServer]]


@pytest.fixture
async def make_emulator() -> AsyncIterator[EmulatorFactory]:
    started: list[LiveEmulator] = []

    async def make(
        config: EmulatorConfig | None = None, faults: FaultPlan | None = None
    ) -> LiveEmulator:
        emu = LiveEmulator(config or EmulatorConfig(think_ms=300), faults)
        await emu.start()
        started.append(emu)
        return emu

    yield make
    for emu in started:
        await emu.stop()


@pytest.fixture
async def fake_twilio_rest() -> AsyncIterator[FakeTwilioRest]:
    app = web.Application()
    fake = FakeTwilioRest(url="")

    async def update_call(request: web.Request) -> web.Response:
        form = await request.post()
        fake.requests.append(
            {"path": request.path, "form": dict(form), "auth": request.headers.get("Authorization")}
        )
        return web.json_response({"sid": request.match_info["sid"], "status": "completed"})

    app.router.add_post("/2010-04-01/Accounts/{account}/Calls/{sid}.json", update_call)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake.url = f"http://127.0.0.1:{port}"
    yield fake
    await runner.cleanup()


@pytest.fixture
async def make_server(make_emulator: EmulatorFactory) -> AsyncIterator[ServerFactory]:
    runners: list[web.AppRunner] = []

    async def make(
        *,
        emulator: LiveEmulator | None = None,
        personas: Path = TEST_PERSONAS,
        twilio_api_base: str | None = None,
        **settings: Any,
    ) -> RunningServer:
        emu = emulator or await make_emulator()
        # The overload guard reads process-wide loop-lag stats; a stall in an earlier test
        # must not turn callers away here (tests/test_bench_stats.py covers the guard).
        settings.setdefault("lag_guard_ms", 0)
        store = PersonaStore(personas)
        gemini = GeminiClients("test-key", emu.url, emu.ca_file)
        app = create_app(
            Settings(personas_dir=personas, **settings),
            store,
            gemini,
            drain_secs=0.5,
            twilio_api_base=twilio_api_base,
        )
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return RunningServer(f"http://127.0.0.1:{port}", app, emu)

    yield make
    for runner in runners:
        await runner.cleanup()


async def wait_until(predicate: Callable[[], bool], timeout_secs: float = 2.0) -> bool:
    """Poll ``predicate`` until it holds or the time is up."""
    deadline = asyncio.get_running_loop().time() + timeout_secs
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True
