"""``sim.bench``: options, lines and scenarios, level verdicts from a loadtest report, tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sim.bench import capacity as bench
from sim.bench import levels, lines, table
from sim.bench.procs import OUR_BASELINE
from sim.caller.line_spec import LineNoiseSpec
from sim.loadtest.scenario import load_scenario

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
    got = levels.summarize_load(_report(tmp_path, [20.0, 20.0], 45.0))
    # 20 s received, 40 ms of underrun: 99.8 % delivered.
    assert got["delivered_pct"] == pytest.approx(100 * 20 / 20.04, abs=0.001)
    assert got["interarrival_p99_ms"] == 45.0 and got["failed"] == 0


def test_quick_flag_shortens_the_run() -> None:
    args = bench.parse_args(["--quick"])
    assert args.hold < 25 and bench.levels_of(args.ours) == [100, 150]
    full = bench.parse_args([])
    assert full.baseline.name == "relay_baseline.py"
    assert bench.levels_of("150, 60,100") == [60, 100, 150]


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
    table.print_table(ours, base, burst, overload)
    out = capsys.readouterr().out
    assert "longest callback (ms)" in out and "2.5" in out
    assert "240 offered: 170 admitted, 70 refused" in out
    assert "0.50x" in out  # calls held: 150 / 300
    assert "2.00x" in out  # CPU per call: 0.6 / 0.3
    assert "12.0/" in out and "30.0" in out


def test_quick_keeps_the_options_given_with_it() -> None:
    args = bench.parse_args(["--quick", "--ours", "20,40", "--hold", "9"])
    assert bench.levels_of(args.ours) == [20, 40] and args.hold == 9.0
    assert args.base == "300" and args.lines == "-44"  # the rest still short
    full = bench.parse_args([])
    assert full.lines == "silence,-60,-50,-44" and full.baseline == OUR_BASELINE
    assert bench.parse_args(["--line-noise-dbfs", "off"]).lines == "silence"


def test_lines_parse_in_order_and_name_the_reference() -> None:
    got = lines.parse_lines("silence, -60,-50dBFS,-44,-44", LineNoiseSpec(), 60.0)
    assert [line.key for line in got] == ["silence", "-60", "-50", "-44"]
    assert got[0].spec.dbfs is None and got[3].spec.dbfs == -44.0
    assert got[0].text.startswith("digital silence")
    assert "-44 dBFS" in got[3].text and "playout delay 60 ms" in got[3].text
    assert lines.noisy_reference(got).key == "-44"
    assert lines.noisy_reference(got[:3]).key == "-50"  # the loudest noise without -44
    with pytest.raises(ValueError, match="expected 'silence' or a level in dBFS"):
        lines.parse_lines("silence,loud", LineNoiseSpec(), 60.0)


def test_scenarios_are_put_on_the_line_and_cut_to_the_hold(tmp_path: Path) -> None:
    line = lines.parse_lines("-50", LineNoiseSpec(), 80.0)[0]
    hold = load_scenario(lines.write_hold(tmp_path, line, 12.0))
    assert hold.line_noise.dbfs == -50.0 and hold.playout_delay_ms == 80.0
    assert [s.kind for s in hold.steps] == ["pause", "hangup"]
    talk = load_scenario(lines.write_speaking(tmp_path, line, 20.0))
    assert talk.hangup_after_secs == 20.0 and talk.line_noise.dbfs == -50.0
    kinds = [s.kind for s in talk.steps]
    assert kinds.count("barge_in") >= 10 and kinds[-1] == "hangup"
    # ~30 % speech: the barge-in (2.6 s) against 4-6 s of reply plus ~1.2 s of turn-around.
    utt = next(iter(talk.utterances().values()))
    step = talk.steps[0].barge_in
    assert step is not None and step.max_after_bot_audio_secs is not None
    cycle = (
        utt.duration_secs + 1.2 + (step.after_bot_audio_secs + step.max_after_bot_audio_secs) / 2
    )
    assert 0.25 <= utt.duration_secs / cycle <= 0.35


def test_speaking_figures_from_the_report(tmp_path: Path) -> None:
    report = _report(tmp_path, [], 41.0)
    data = json.loads((report / "report.json").read_text())
    data["summary"]["metrics"]["bargein_clear_ms"] = {"p50": 180.0, "p95": 260.0}
    data["summary"]["bargeins"] = 7
    for c in data["calls"]:
        c["audio_sent_secs"], c["duration_secs"] = 6.0, 20.0
    (report / "report.json").write_text(json.dumps(data))
    got = levels.summarize_load(report)
    assert got["bargein_clear_p50_ms"] == 180.0 and got["bargein_clear_p95_ms"] == 260.0
    assert got["speaking_pct"] == 30.0 and got["bargeins"] == 7


def test_vad_cost_from_its_counters() -> None:
    before = {"windows": 1000, "batches": 10, "inference_secs": 0.5, "loop_secs": 0.1, "x": "y"}
    after = {"windows": 1000 + 31 * 100 * 10, "batches": 510, "inference_secs": 0.5 + 0.0537,
             "loop_secs": 0.1 + 0.03}  # fmt: skip
    got = levels.vad_figures(before, after, secs=10.0, calls=100)
    assert got is not None
    assert got["windows_per_call_sec"] == 31.0
    assert got["us_per_window"] == pytest.approx(2.7, abs=0.01)  # 83.7 ms / 31,000 windows
    assert got["delta"]["batches"] == 500
    assert got["core_pct_per_call"] == pytest.approx(0.0084, abs=1e-4)
    assert levels.vad_figures(None, after, 10.0, 100) is None


def test_lines_table_ratios_and_silence_against_noise(capsys: pytest.CaptureFixture[str]) -> None:
    def run(held: int, cpu: float) -> dict[str, object]:
        ref = {"level": held, "interarrival_p99_ms": 44.0, "delivered_pct": 100.0,
               "lateness_p99_ms": 1.2, "cpu_pct": 90.0}  # fmt: skip
        return {"held": held, "cpu_per_call_pct": cpu, "mem_per_call_mb": 0.5, "ref": ref}

    ours = {"silence": run(150, 0.5), "-44": run(120, 0.6)}
    base = run(300, 0.25)
    got = [
        {"key": "silence", "text": "digital silence"},
        {"key": "-44", "text": "pink noise -44 dBFS"},
    ]
    table.print_lines(got, ours, base, "pink noise -44 dBFS")
    out = capsys.readouterr().out
    assert "line: pink noise -44 dBFS  (figures at 120 calls" in out
    assert "0.40x" in out and "2.40x" in out  # held 120/300; CPU per call 0.6/0.25
    assert "150 / 120 = 1.25x (target <= 1.20x: NOT MET)" in out
    check = table.silence_vs_noise(ours)
    assert check is not None and check["ratio"] == 1.25 and not check["ok"]
    summary = table.line_summary(ours["-44"], base)
    assert summary["held"] == {"ours": 120, "base": 300, "ratio": 0.4}
    assert summary["lateness_p99_ms"]["ratio"] == 1.0
