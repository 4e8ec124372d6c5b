"""A small load test against relay_baseline-like behaviour: an in-test server, real sockets."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from sim.caller.plan import read_wav_as_ulaw
from sim.caller.twilio_webhook import write_wav
from sim.emulator.config import ASSETS_DIR
from sim.loadtest.cmd import configure
from sim.loadtest.report import summarize
from sim.loadtest.runner import LoadConfig, run_calls
from sim.loadtest.scenario import parse_scenario
from sim.testing import scripted_bot_app

pytestmark = pytest.mark.e2e

SCENARIO = """
steps:
  - wait_for_greeting: {timeout_secs: 2, quiet_secs: 0.1}
  - say: SAY_WAV
  - hangup
"""


async def test_loadtest_runs_calls_and_report_matches(aiohttp_server, tmp_path: Path) -> None:
    # The caller says the first 1.4 s of caller_bargein.wav (70 frames; two rounds of 3 calls).
    say = tmp_path / "bargein_start.wav"
    write_wav(say, read_wav_as_ulaw(ASSETS_DIR / "caller_bargein.wav")[: 8000 * 14 // 10])
    server = await aiohttp_server(scripted_bot_app())
    sc = parse_scenario(SCENARIO.replace("SAY_WAV", str(say)), "t.yaml")
    cfg = LoadConfig(url=str(server.make_url("/")), scenario=sc, calls=6, concurrency=3)
    out = await run_calls(cfg, list(range(6)))
    assert len(out.records) == 6 and all(r["ok"] for r in out.records)
    summary = summarize(out.records, out.lateness, out.concurrency)
    assert summary["concurrency_max"] == 3
    assert summary["metrics"]["greeting_ms"]["count"] == 6
    assert out.lateness.count > 6 * 50  # every call sent frames through the shared ticker
    assert summary["metrics"]["send_lateness_ms"]["p99"] < 20


def test_cli_exit_code_on_missed_slo(tmp_path: Path) -> None:
    # a server that refuses everything: every call fails, so max_failed_pct=0 is missed
    from sim.loadtest.cmd import EXIT_SLO, run

    p = argparse.ArgumentParser()
    configure(p)
    args = p.parse_args(
        [
            "--url",
            "http://127.0.0.1:9",
            "--calls",
            "2",
            "--concurrency",
            "2",
            "--slo",
            "max_failed_pct=0",
            "--report",
            str(tmp_path),
            "--line-noise-dbfs",
            "-50",
            "--line-noise-color",
            "white",
        ]
    )
    assert run(args) == EXIT_SLO
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["summary"]["meta"]["line"]["dbfs"] == -50.0  # the report states the line
    assert doc["summary"]["meta"]["line"]["color"] == "white"
    assert "white noise -50 dBFS" in (tmp_path / "report.html").read_text()
    assert doc["summary"]["failed"] == 2 and all(
        c["failure"].startswith("webhook:") for c in doc["calls"]
    )
