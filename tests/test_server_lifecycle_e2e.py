"""Server lifecycle: persona reload under live calls, and SIGTERM with calls in progress."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

from bot.app_keys import PERSONAS
from sim.caller import CallPlan, place_call
from sim.emulator import EmulatorConfig
from sim.emulator.config import SHORT_REPLY_WAV
from sim.testing import TEST_THINK_MS, free_port, wait_until
from tests.conftest import TEST_PERSONAS

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent


def _setup_voices(emulator) -> list[str]:
    voices = []
    for records in emulator.recordings.values():
        for record in records:
            if "setup" in record["msg"]:
                voices.append(json.dumps(record["msg"]).split('"voice_name": "')[1].split('"')[0])
    return voices


async def test_reload_keeps_live_calls_on_their_persona(make_emulator, make_server, tmp_path):
    personas = tmp_path / "personas"
    shutil.copytree(TEST_PERSONAS, personas)
    # A 2 s greeting: the calls only need to be served, on the voice their setup names.
    short = SHORT_REPLY_WAV
    emu = await make_emulator(EmulatorConfig(think_ms=TEST_THINK_MS, greeting_wav=short))
    server = await make_server(emulator=emu, personas=personas)
    store = server.app[PERSONAS]

    first = asyncio.create_task(
        place_call(server.url, CallPlan().wait_for_greeting().pause(2).hangup()), name="first"
    )
    assert await wait_until(lambda: len(server.calls) == 1, 5.0)

    path = personas / "frontdesk.yaml"
    path.write_text(path.read_text().replace("voice: Charon", "voice: Kore"))
    assert store.reload()
    second = await place_call(server.url, CallPlan().wait_for_greeting().hangup())

    path.write_text(path.read_text().replace("voice: Kore", "voice: Bob"))
    assert not store.reload()  # refused: the previous set stays in service
    third = await place_call(server.url, CallPlan().wait_for_greeting().hangup())

    first_result = await first
    for result in (first_result, second, third):
        assert result.ok, result.failure
    assert first_result.duration_secs > 2  # the first call went on across the reload
    assert _setup_voices(server.emulator) == ["Charon", "Kore", "Kore"]


async def test_sigterm_wraps_up_live_calls_with_a_goodbye_and_exits():
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINI_", "TWILIO_"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "serve",
        "--port",
        str(port),
        "--ops-port",
        "0",
        "--personas",
        str(TEST_PERSONAS),
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    try:
        lines: list[str] = []
        while not any("voicebot serving on" in line for line in lines):
            line = await asyncio.wait_for(proc.stderr.readline(), 30)
            assert line, "server exited before serving:\n" + "".join(lines)
            lines.append(line.decode())
        assert any("embedded Live API emulator" in line for line in lines), lines

        url = f"http://127.0.0.1:{port}"
        call = asyncio.create_task(
            place_call(url, CallPlan().wait_for_greeting().pause(30)), name="long-call"
        )
        await asyncio.sleep(2.0)
        proc.send_signal(signal.SIGTERM)
        started = asyncio.get_running_loop().time()
        code = await asyncio.wait_for(proc.wait(), 20)
        elapsed = asyncio.get_running_loop().time() - started
        result = await asyncio.wait_for(call, 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    assert code == 0
    # Issue 12: a call still up when the 2 s drain window closes is not cut: it hears the
    # persona's goodbye (the emulator's ~4 s answer) and ends normally, then the process exits.
    assert elapsed < 2 + 10, elapsed
    assert result.duration_secs < 16  # the call was ended, not left hanging for 30 s
    assert result.ok, result.failure
    assert "(1000" in result.end_reason, result.end_reason
    rest = (await proc.stderr.read()).decode()
    assert "ended after" in rest and "shutting down" in rest, rest
    assert "1 wrapped up with a goodbye, 0 cut" in rest, rest
