"""``voicebot serve --workers 2`` as a process: two workers on one port, metrics, drain.

The real command (Gunicorn's master and two ``VoicebotWorker`` processes) against the emulator
in this process, the real SDK in the workers, the simulated caller. Expected: calls placed on
the one public port are served by both workers; the aggregate ``/metrics`` on the ops port
labels each worker's series and their ``voicebot_calls_started_total`` sums to the calls
placed; SIGTERM to the master drains both workers (the live calls hear the drain's goodbye and
end normally, none is cut) and the master exits 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipelines.call.control import WRAP_UP_GOODBYE
from sim.caller import CallPlan, place_call
from sim.emulator import EmulatorConfig
from sim.emulator.config import SHORT_REPLY_WAV
from sim.testing import TEST_THINK_MS, free_port_block

pytestmark = [pytest.mark.e2e, pytest.mark.cpu_heavy]

REPO = Path(__file__).resolve().parent.parent
VOICEBOT = Path(sys.executable).parent / "voicebot"
SHORT, STAYING = 6, 4


async def _get(url: str) -> tuple[int, str]:
    try:
        async with aiohttp.ClientSession() as http, http.get(url) as r:
            return r.status, await r.text()
    except aiohttp.ClientError:
        return 0, ""


async def _wait_for(predicate, timeout_secs: float) -> bool:
    deadline = time.monotonic() + timeout_secs
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.2)
    return False


def _started_by_worker(page: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(page):
        if family.name == "voicebot_calls_started":
            for s in family.samples:
                if s.name.endswith("_total"):
                    w = s.labels["worker"]
                    out[w] = out.get(w, 0.0) + s.value
    return out


async def test_two_workers_share_the_port_aggregate_metrics_and_drain_on_sigterm(
    make_emulator, tmp_path
):
    # A 2 s greeting (and drain goodbye), not the 3.9 s default: each call only has to hear one.
    short = SHORT_REPLY_WAV
    emulator = await make_emulator(EmulatorConfig(think_ms=TEST_THINK_MS, greeting_wav=short))
    port, ops = free_port_block(4), free_port_block(4)  # each with its peer and ops ports
    env = {
        **os.environ,
        "GEMINI_API_KEY": "test-key",
        "GEMINI_BASE_URL": emulator.url,
        "GEMINI_CA_FILE": str(emulator.ca_file),
        "VOICEBOT_DATABASE_URL": "off",
        "VOICEBOT_LAG_GUARD_MS": "0",
        "VOICEBOT_PERSONAS_DIR": str(REPO / "config" / "personas"),
    }
    for name in ("TWILIO_AUTH_TOKEN", "TWILIO_ACCOUNT_SID", "PUBLIC_URL", "VOICEBOT_PEER_URL"):
        env.pop(name, None)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *[str(VOICEBOT), "serve", "--workers", "2", "--port", str(port)],
            *["--ops-port", str(ops), "--drain-secs", "1"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
    url, ops_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{ops}"
    try:

        async def both_up() -> bool:
            status, body = await _get(f"{ops_url}/stats")
            return status == 200 and json.loads(body)["workers_up"] == 2

        assert await _wait_for(both_up, 30), log.read_text()[-3000:]

        # Calls on the one port: both workers serve some.
        short = [
            place_call(url, CallPlan().wait_for_greeting().pause(0.3).hangup())
            for _ in range(SHORT)
        ]
        results = await asyncio.gather(*short)
        for r in results:
            assert r.ok and "caller hung up" in r.end_reason, (r.failure, r.end_reason)

        # Calls that stay on the line until the drain.
        staying = [
            asyncio.create_task(place_call(url, CallPlan().wait_for_greeting().pause(60)))
            for _ in range(STAYING)
        ]

        async def staying_live() -> bool:
            status, body = await _get(f"{ops_url}/stats")
            return status == 200 and json.loads(body)["calls"] == STAYING

        assert await _wait_for(staying_live, 15)

        # /stats counts a call from its webhook; the counter moves when its stream starts
        # (~0.3 s later, Twilio's connect time): read it once every stream has started.
        status, page = 0, ""

        async def all_started() -> bool:
            nonlocal status, page
            status, page = await _get(f"{ops_url}/metrics")
            return status == 200 and sum(_started_by_worker(page).values()) >= SHORT + STAYING

        await _wait_for(all_started, 10)
        assert status == 200
        started = _started_by_worker(page)
        assert sum(started.values()) == SHORT + STAYING, started
        assert set(started) == {"0", "1"} and min(started.values()) >= 1, started
        assert 'voicebot_worker_up{worker="0"} 1.0' in page
        assert 'voicebot_worker_up{worker="1"} 1.0' in page

        # SIGTERM to the master: both workers drain, the master exits 0.
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        ended = await asyncio.wait_for(asyncio.gather(*staying), 40)
        code = await asyncio.wait_for(proc.wait(), 40)
        took = time.monotonic() - began
        assert code == 0, log.read_text()[-3000:]
        for r in ended:
            # Wrapped up by the drain: the goodbye played to its end, then a normal close.
            assert r.ok, (r.failure, r.end_reason)
            assert "(1000" in r.end_reason, r.end_reason
            assert r.audio_received_secs - r.audio_played_secs < 0.3
        texts = [
            "\n".join(json.dumps(rec["msg"]) for rec in records)
            for records in emulator.recordings.values()
        ]
        goodbye = WRAP_UP_GOODBYE.split(".")[0]
        assert sum(goodbye in t for t in texts) == STAYING
        assert took < 35, took
        print(f"\n2 workers: calls started per worker {started}; drained, exited in {took:.1f} s")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_worker_that_cannot_start_stops_the_master_with_the_reason(tmp_path):
    personas = tmp_path / "personas"
    personas.mkdir()
    (personas / "broken.yaml").write_text("model: gemini-3.8-live\nvoice: Bob\n")
    port, ops = free_port_block(4), free_port_block(4)  # each with its peer and ops ports
    env = {**os.environ, "VOICEBOT_PERSONAS_DIR": str(personas), "VOICEBOT_DATABASE_URL": "off"}
    env.pop("TWILIO_AUTH_TOKEN", None)
    proc = await asyncio.create_subprocess_exec(
        *[str(VOICEBOT), "serve", "--workers", "2", "--port", str(port), "--ops-port", str(ops)],
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = out.decode(errors="replace")
    # Halted at once (no respawn loop), exit 1, with the persona error each worker printed.
    assert proc.returncode == 1, text[-2000:]
    assert "invalid personas" in text and "broken.yaml" in text, text[-2000:]
    assert "Worker failed to boot" in text and text.count("Booting worker") <= 4, text[-2000:]
