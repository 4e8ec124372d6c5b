"""Issue 13, attack "unsafe defaults": ``voicebot serve`` reachable from outside, for real.

Each case is the real command in a subprocess (the behaviour is about the process: its exit
status and what it prints), all started at once to keep the module quick:

- Twilio token set, no ``GEMINI_API_KEY`` -> exit 1 naming the variable and both fixes; the
  same for ``--host 0.0.0.0`` without a token; an ops listener on 0.0.0.0 without
  ``VOICEBOT_OPS_TOKEN`` -> exit 1 naming it.
- ``--emulator`` given explicitly -> serves (the embedded emulator, said in the log).
- A wrong key, pointed at an emulator that knows the right one -> exit 1 naming
  ``GEMINI_API_KEY`` before any listener opens: no call can be served, no session is opened.
- The right key -> checked once (no Live session spent on it), then serves a real call.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from sim.caller import CallPlan, place_call
from sim.emulator import EmulatorConfig
from sim.emulator.config import SHORT_REPLY_WAV
from sim.testing import TEST_THINK_MS, free_port
from tests.conftest import TEST_PERSONAS

pytestmark = [pytest.mark.e2e, pytest.mark.cpu_heavy]

REPO = Path(__file__).resolve().parent.parent
TWILIO_TOKEN = "prod-like-auth-token"
RIGHT_KEY = "AIza-right-key-for-the-emulator"
START_TIMEOUT_SECS = 60.0


@dataclass
class Started:
    """A ``voicebot serve`` that either exited (``code``) or is serving (``proc`` alive)."""

    proc: asyncio.subprocess.Process
    port: int
    code: int | None
    stderr: str

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        return int(self.proc.returncode or 0)


async def _serve(*args: str, **env: str) -> Started:
    """Start ``voicebot serve`` and wait until it serves or exits."""
    port = free_port()
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("GEMINI_", "TWILIO_", "VOICEBOT_"))
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "serve", "--port", str(port), "--ops-port", "0",
        "--personas", str(TEST_PERSONAS), *args,
        cwd=REPO, env={**clean, **env},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    lines: list[str] = []
    while True:
        raw = await asyncio.wait_for(proc.stderr.readline(), START_TIMEOUT_SECS)
        if not raw:  # exited
            return Started(proc, port, await proc.wait(), "".join(lines))
        lines.append(raw.decode())
        if "voicebot serving on" in lines[-1]:
            return Started(proc, port, None, "".join(lines))


async def _webhook_reachable(port: int) -> bool:
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://127.0.0.1:{port}/twilio/voice", data={}) as resp:
                return resp.status > 0
    except aiohttp.ClientConnectionError:
        return False


async def test_serve_reachable_from_outside_needs_a_real_checked_key(make_emulator):
    short = SHORT_REPLY_WAV  # the one call only has to hear a greeting
    emulator = await make_emulator(
        EmulatorConfig(think_ms=TEST_THINK_MS, api_key=RIGHT_KEY, greeting_wav=short)
    )
    at_emulator = {"GEMINI_BASE_URL": emulator.url, "GEMINI_CA_FILE": str(emulator.ca_file)}
    no_key, exposed_host, open_ops, emulated, wrong, right = await asyncio.gather(
        _serve(TWILIO_AUTH_TOKEN=TWILIO_TOKEN),
        _serve("--host", "0.0.0.0"),
        _serve("--emulator", "--ops-port", "0.0.0.0:0"),
        _serve("--emulator", TWILIO_AUTH_TOKEN=TWILIO_TOKEN),
        _serve(TWILIO_AUTH_TOKEN=TWILIO_TOKEN, GEMINI_API_KEY="AIza-wrong-key", **at_emulator),
        _serve(TWILIO_AUTH_TOKEN=TWILIO_TOKEN, GEMINI_API_KEY=RIGHT_KEY, **at_emulator),
    )
    try:
        # No key, reachable from outside: refused, naming the variable and both fixes.
        for started, why in ((no_key, "TWILIO_AUTH_TOKEN is set"), (exposed_host, "0.0.0.0")):
            assert started.code == 1, started.stderr
            assert "GEMINI_API_KEY is not set" in started.stderr, started.stderr
            assert why in started.stderr and "--emulator" in started.stderr, started.stderr
            assert "Traceback" not in started.stderr
        # An ops listener open to the network without a token: refused, naming the token.
        assert open_ops.code == 1, open_ops.stderr
        assert "VOICEBOT_OPS_TOKEN is not set" in open_ops.stderr, open_ops.stderr

        # --emulator on purpose: serves, and says it is the emulator.
        assert emulated.code is None, emulated.stderr
        assert "--emulator given: using the embedded Live API emulator" in emulated.stderr

        # A wrong key: exit 1 before listening, naming GEMINI_API_KEY (not a persona).
        assert wrong.code == 1, wrong.stderr
        error = [line for line in wrong.stderr.splitlines() if line.startswith("voicebot serve:")]
        assert len(error) == 1, wrong.stderr
        assert "GEMINI_API_KEY was rejected" in error[0] and "API key not valid" in error[0]
        assert "persona" not in error[0]
        assert "voicebot serving on" not in wrong.stderr
        assert "AIza-wrong-key" not in wrong.stderr  # the key itself is never printed
        assert not await _webhook_reachable(wrong.port)

        # The right key: accepted at start without opening a Live session, then a real call.
        assert right.code is None, right.stderr
        assert "GEMINI_API_KEY accepted" in right.stderr, right.stderr
        assert emulator.sessions_total == 0  # neither key check opened a session
        result = await place_call(
            f"http://127.0.0.1:{right.port}",
            CallPlan().wait_for_greeting().hangup(),
            auth_token=TWILIO_TOKEN,
        )
        assert result.ok, result.failure
        assert emulator.sessions_total == 1
    finally:  # every process this test started, by its own handle (the refused ones exited)
        everyone = (emulated, right, no_key, exposed_host, open_ops, wrong)
        codes = await asyncio.gather(*(started.stop() for started in everyone))
    assert codes[:2] == [0, 0]  # the two that served drained and exited cleanly
