"""Fixtures for end-to-end tests: the real server, the Live API emulator, a fake Twilio REST API.

Everything runs in the test's event loop over loopback: the real aiohttp server, the real
google-genai SDK and the real Pipecat service talk to the emulator over TLS, and the
simulated caller talks to the server like Twilio. The fixtures are thin wrappers over
:mod:`sim.testing`, which holds the code.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # imported where used: an xdist controller, which runs no test, skips them
    from sim.emulator import EmulatorConfig, FaultPlan, LiveEmulator
    from sim.testing import FakeTwilioRest, RunningServer

# Longest-first ordering for xdist workers, and `--store-durations` (tests/schedule.py); workers
# forked from one process that imported the code, and no walk of the heap at their exit
# (tests/xdist_workers.py).
pytest_plugins = ["tests.schedule", "tests.xdist_workers"]

# No call records from servers the tests start (in-process or as `voicebot serve` processes,
# which inherit this): they would land in ./voicebot-calls.db. Records tests pass their own URL.
os.environ.setdefault("VOICEBOT_DATABASE_URL", "off")

__all__ = ["TEST_PERSONAS"]

TEST_PERSONAS = Path(__file__).parent / "personas"

EmulatorFactory = Callable[..., Awaitable["LiveEmulator"]]
ServerFactory = Callable[..., Awaitable["RunningServer"]]


@pytest.fixture
async def make_emulator() -> AsyncIterator[EmulatorFactory]:
    async with contextlib.AsyncExitStack() as stack:

        async def make(
            config: EmulatorConfig | None = None, faults: FaultPlan | None = None
        ) -> LiveEmulator:
            from sim.testing import running_emulator

            return await stack.enter_async_context(running_emulator(config, faults))

        yield make


@pytest.fixture
async def fake_twilio_rest() -> AsyncIterator[FakeTwilioRest]:
    from sim.testing import fake_twilio_rest as _fake_twilio_rest

    async with _fake_twilio_rest() as fake:
        yield fake


@pytest.fixture
async def make_server(make_emulator: EmulatorFactory) -> AsyncIterator[ServerFactory]:
    async with contextlib.AsyncExitStack() as stack:

        async def make(
            *,
            emulator: LiveEmulator | None = None,
            personas: Path = TEST_PERSONAS,
            twilio_api_base: str | None = None,
            **settings: Any,
        ) -> RunningServer:
            from sim.testing import running_server

            emu = emulator or await make_emulator()
            return await stack.enter_async_context(
                running_server(emu, personas, twilio_api_base=twilio_api_base, **settings)
            )

        yield make
