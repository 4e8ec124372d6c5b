"""``sim.bench``: options, level verdicts from a loadtest report, the summary table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sim.bench import capacity as bench

pytestmark = pytest.mark.unit


def _report(tmp: Path, gaps: list[float], interarrival_p99: float, failed: int = 0) -> Path:
    calls = [
        {"audio_received_secs": 10.0, "gaps_ms": gaps},
        {"audio_received_secs": 10.0, "gaps_ms": []},
    ]
    metric = {"p50": 40.0, "p95": interarrival_p99, "p99": interarrival_p99, "max": 80.0}
    summary = {
        "calls": 2,
        "failed": failed,
        "metrics": {
            "interarrival_ms": metric,
            "gap_ms": {"p99": max(gaps, default=None)},
            "send_lateness_ms": {"p99": 1.0},
            "setup_ms": {"p99": 30.0},
        },
    }
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "report.json").write_text(json.dumps({"summary": summary, "calls": calls}))
    return tmp


def test_delivered_counts_underruns(tmp_path: Path) -> None:
    got = bench._summarize_load(_report(tmp_path, [20.0, 20.0], 45.0))
    # 20 s received, 40 ms of underrun: 99.8 % delivered.
    assert got["delivered_pct"] == pytest.approx(100 * 20 / 20.04, abs=0.001)
    assert got["interarrival_p99_ms"] == 45.0 and got["failed"] == 0


def test_quick_flag_shortens_the_run() -> None:
    args = bench.parse_args(["--quick"])
    assert args.hold < 25 and bench._levels(args.ours) == [100, 150]
    full = bench.parse_args([])
    assert full.baseline.name == "relay_baseline.py"
    assert bench._levels("150, 60,100") == [60, 100, 150]


def test_table_shows_ratios(capsys: pytest.CaptureFixture[str]) -> None:
    stats = {
        "bridge_in_ms": {"p50": 12.0, "p99": 30.0},
        "bridge_out_ms": {"p50": 3.0, "p99": 20.0},
        "loop_lag_ms": {"p99": 4.0, "max": 9.0},
    }
    ours = {
        "held": 150,
        "cpu_per_call_pct": 0.6,
        "mem_per_call_mb": 1.5,
        "ref": {"interarrival_p99_ms": 50.0, "delivered_pct": 99.95, "stats": stats},
    }
    base = {"held": 300, "cpu_per_call_pct": 0.3, "mem_per_call_mb": 0.4,
            "ref": {"interarrival_p99_ms": 42.0, "delivered_pct": 100.0}}  # fmt: skip
    burst = {"loop_lag_max_ms": 4.0, "base_calls": 100, "longest_callback_ms": 2.5}
    overload = {
        "offered": 240,
        "admitted": 170,
        "refused": 70,
        "admitted_failed": 0,
        "admitted_frame_gap_p99_ms": 52.0,
        "admitted_delivered_pct": 99.99,
    }
    bench.print_table(ours, base, burst, overload)
    out = capsys.readouterr().out
    assert "longest callback (ms)" in out and "2.5" in out
    assert "240 offered: 170 admitted, 70 refused" in out
    assert "0.50x" in out  # calls held: 150 / 300
    assert "2.00x" in out  # CPU per call: 0.6 / 0.3
    assert "12.0/" in out and "30.0" in out
