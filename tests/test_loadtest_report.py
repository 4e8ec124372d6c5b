"""Scenario validation, SLO parsing and checks, report files agreeing with the calls' records."""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import pytest

from sim.caller.frame_ticker import LatenessHistogram
from sim.caller.line_noise import LineNoise
from sim.caller.plan import BargeIn, Dtmf, Say
from sim.loadtest.cmd import EXIT_SLO, EXIT_USAGE, configure, run
from sim.loadtest.report import check_slos, parse_slo, summarize, write_report
from sim.loadtest.scenario import ScenarioError, load_scenario, parse_scenario

pytestmark = pytest.mark.unit


def test_builtin_scenarios_load_and_build_plans() -> None:
    for name in ("default", "bargein"):
        plan = load_scenario(name).build_plan(random.Random(1))
        assert any(isinstance(s, Say) for s in plan.steps)
    kinds = {
        type(s)
        for seed in range(20)
        for s in load_scenario("bargein").build_plan(random.Random(seed)).steps
    }
    assert BargeIn in kinds and Dtmf in kinds


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "steps:\n  - barge_in: {after: 1}\n",
            "steps[0].barge_in.after: Extra inputs are not permitted",
        ),
        ("steps:\n  - say: caller_hello.wav\n    pause: 1\n", "exactly one of"),
        (
            "steps:\n  - pause: {secs: -1}\n",
            "steps[0].pause.secs: Input should be greater than or equal to 0",
        ),
        ("steps: []\n", "steps: List should have at least 1 item"),
        ("steps:\n  - say: nope.wav\n", "steps[0].say.audio: audio file 'nope.wav' not found"),
        ("steps:\n  - dtmf: {digits: x}\n", "steps[0].dtmf.digits: String should match pattern"),
        ("- just a list\n", "expected a mapping with 'steps'"),
    ],
)
def test_scenario_errors_name_the_file_and_field(text: str, expected: str) -> None:
    with pytest.raises(ScenarioError) as e:
        parse_scenario(text, "my.yaml")
    assert str(e.value).startswith("my.yaml: ") and expected in str(e.value)


def test_dtmf_with_leading_zero_stays_text() -> None:
    sc = parse_scenario("steps:\n  - dtmf: {digits: 012}\n", "x.yaml")
    assert sc.steps[0].dtmf is not None and sc.steps[0].dtmf.digits == "012"


def test_slo_parsing() -> None:
    assert parse_slo("p95_response_ms=1200") == ("p95_response_ms", 1200.0)
    with pytest.raises(ValueError, match="expected NAME=VALUE"):
        parse_slo("p95_respons_ms=1")
    with pytest.raises(ValueError, match="not a number"):
        parse_slo("max_failed_pct=lots")


def record(i: int, ok: bool = True, lat: list[float] | None = None, stale: int = 0) -> dict:
    return {
        "index": i,
        "ok": ok,
        "failure": None if ok else "webhook: HTTP 503",
        "end_reason": "caller hung up",
        "setup_ms": 10.0 + i,
        "setup_to_audio_ms": 20.0 + i,
        "greeting_ms": 5.0 * i,
        "response_latencies_ms": lat or [],
        "replies_missed": 0,
        "talkovers": 0,
        "bargeins": 1,
        "bargein_to_clear_ms": [100.0 + i],
        "bargein_to_silence_ms": [100.0 + i],
        "bargeins_unanswered": 0,
        "clears": 1,
        "stale_frames": stale,
        "gaps_ms": [],
        "interarrival_p99_ms": 40.0,
        "audio_received_secs": 1.0,
        "events": [],
    }


def test_summary_and_report_agree_with_records(tmp_path: Path) -> None:
    recs = [record(i, lat=[100.0 * (i + 1)]) for i in range(10)] + [record(10, ok=False, stale=3)]
    late = LatenessHistogram()
    for ms in range(100):
        late.add(ms / 10000)  # 0.0 .. 9.9 ms
    summary = summarize(recs, late, [(0.0, 0), (1.0, 11), (2.0, 3)])
    assert summary["calls"] == 11 and summary["failed"] == 1
    assert summary["failures_by_reason"] == {"webhook: HTTP 503": 1}
    assert summary["metrics"]["response_ms"]["p50"] == 550.0
    assert summary["metrics"]["response_ms"]["max"] == 1000.0
    assert summary["stale_frames"] == 3 and summary["concurrency_max"] == 11
    assert summary["metrics"]["send_lateness_ms"]["p99"] == pytest.approx(9.9, abs=0.11)
    assert check_slos(summary, {"p95_response_ms": 2000, "max_stale_frames": 3}) == []
    assert check_slos(summary, {"p95_response_ms": 500}) == ["p95_response_ms: 955 > 500"]
    assert check_slos(summary, {"max_failed_pct": 5}) == ["max_failed_pct: 9.09 > 5"]
    jp, hp = write_report(tmp_path, summary, recs, [(0.0, 0), (1.0, 11)])
    doc = json.loads(jp.read_text())
    assert doc["summary"]["metrics"]["response_ms"] == summary["metrics"]["response_ms"]
    assert len(doc["calls"]) == 11
    page = hp.read_text()
    assert (
        page.count("<svg") >= 10
        and "<script" not in page
        and "http" not in page.replace("http://www.w3.org/2000/svg", "")
    )


def test_protocol_errors_are_summed_by_kind_gated_by_slo_and_the_line_is_stated(
    tmp_path: Path,
) -> None:
    recs = [record(0), record(1), record(2)]
    recs[1]["protocol_errors"] = {"wrong_stream_sid": 2, "binary": 1}
    recs[2]["protocol_errors"] = {"wrong_stream_sid": 1}
    line = {"dbfs": -45.0, "color": "pink", "echo_db": None, "playout_delay_ms": 60.0}
    summary = summarize(recs, LatenessHistogram(), [(0.0, 3)], {"line": line})
    assert summary["protocol_errors"] == 4 and summary["calls_with_protocol_errors"] == 2
    assert summary["protocol_errors_by_kind"] == {"wrong_stream_sid": 3, "binary": 1}
    assert parse_slo("max_protocol_errors=0") == ("max_protocol_errors", 0.0)
    assert check_slos(summary, {"max_protocol_errors": 0}) == ["max_protocol_errors: 4 > 0"]
    assert check_slos(summary, {"max_protocol_errors": 4}) == []
    _, hp = write_report(tmp_path, summary, recs, [(0.0, 3)])
    page = hp.read_text()
    assert "pink noise -45 dBFS, no echo, playout delay 60 ms" in page
    assert "wrong_stream_sid x3, binary x1" in page


def test_scenario_line_noise_and_command_line_overrides() -> None:
    sc = parse_scenario("line_noise: {dbfs: -50, color: white}\nsteps:\n  - hangup\n", "l.yaml")
    plan = sc.build_plan()
    assert (plan.line_noise.dbfs, plan.line_noise.color) == (-50.0, "white")
    assert plan.playout_delay_secs == pytest.approx(0.06)
    assert parse_scenario("line_noise: off\nsteps: [hangup]\n").line_noise.dbfs is None
    over = sc.with_line("off", None, 30.0, 20.0)
    assert over.line_description() == {
        "dbfs": None, "color": "white", "echo_db": 30.0, "echo_delay_ms": 40.0,
        "playout_delay_ms": 20.0,
    }  # fmt: skip
    with pytest.raises(ScenarioError, match="expected -120 to -3 dBFS"):
        sc.with_line(0.0)
    with pytest.raises(ScenarioError, match=r"l.yaml: line_noise.color: Input should be"):
        parse_scenario("line_noise: {color: brown}\nsteps: [hangup]\n", "l.yaml")
    default = load_scenario("default").build_plan().line_noise
    assert default == LineNoise()  # no line_noise: the realistic default line


def test_lateness_histogram_merge_and_wire_roundtrip() -> None:
    a, b = LatenessHistogram(), LatenessHistogram()
    a.add(0.001)
    b.add(0.004)
    a.merge(LatenessHistogram.from_sparse(json.loads(json.dumps(b.to_sparse()))))
    assert a.count == 2 and a.percentile(100) == pytest.approx(4.0)


def test_cli_rejects_bad_slo_and_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    p = argparse.ArgumentParser()
    configure(p)
    assert run(p.parse_args(["--url", "http://x", "--slo", "bogus=1"])) == EXIT_USAGE
    assert run(p.parse_args(["--url", "http://x", "--scenario", "nope"])) == EXIT_USAGE
    assert "built-in scenarios: bargein, default" in capsys.readouterr().err
    assert EXIT_SLO == 1


def test_health_warnings_name_shared_cores_and_a_saturated_server() -> None:
    from sim.loadtest.cmd import health_warnings

    quiet = {"foreign_load_pct": 2.0, "server_cpu_pct": {"mean": 60.0, "p90": 70.0}}
    assert health_warnings(quiet) == []
    busy = {
        "generator_cores": [0],
        "foreign_load_pct": 26.7,
        "server_cores": [1],
        "server_cpu_pct": {"mean": 56.0, "p90": 97.0, "max": 99.0},
        "server_cores_busy_pct": {"mean": 77.0, "p90": 100.0, "max": 100.0},
    }
    w = health_warnings(busy)
    assert len(w) == 3
    assert "26.7% of a core on the generator's cores [0]" in w[0]
    assert "saturated" in w[1] and "server's cores [1]" in w[2]


def test_quiet_gc_freezes_records_pauses_and_restores() -> None:
    import gc

    from sim.loadtest.host_load import GC_THRESHOLDS, quiet_gc

    before = gc.get_threshold()
    with quiet_gc() as stats:
        assert gc.get_threshold() == GC_THRESHOLDS and gc.get_freeze_count() > 0
        gc.collect(0)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    assert stats.summary()["collections"][0] == 1 and stats.summary()["pause_max_ms"] >= 0


def test_dead_air_over_calls_is_summarized_gated_and_set_by_the_scenario(tmp_path: Path) -> None:
    recs = [record(i) | {"dead_air_secs": float(i)} for i in range(5)]  # 0, 1, 2, 3, 4 s
    summary = summarize(recs, LatenessHistogram(), [(0.0, 5)])
    assert summary["metrics"]["dead_air_secs"] == {
        "count": 5, "p50": 2.0, "p95": 3.8, "p99": 3.96, "max": 4.0,
    }  # fmt: skip
    assert check_slos(summary, {"max_dead_air_secs": 2}) == ["max_dead_air_secs: 4 > 2"]
    assert check_slos(summary, {"p50_dead_air_secs": 2}) == []
    _, hp = write_report(tmp_path, summary, recs, [(0.0, 5)])
    assert "longest dead air per call (s)" in hp.read_text()
    sc = parse_scenario("steps:\n  - hangup\nslo: {max_dead_air_secs: 2.5}\n", "s.yaml")
    assert sc.slo == {"max_dead_air_secs": 2.5}
    with pytest.raises(ScenarioError, match=r"s\.yaml: slo: .*unknown SLO name\(s\) max_dead_air"):
        parse_scenario("steps:\n  - hangup\nslo: {max_dead_air: 2}\n", "s.yaml")


def test_a_scenario_slo_fails_the_run_and_the_command_line_overrides_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sim.loadtest import runner

    rec = record(0) | {"dead_air_secs": 3.0}

    def fake_run_load(cfg: runner.LoadConfig, progress: object) -> runner.LoadOutcome:
        return runner.LoadOutcome(
            records=[rec], lateness=LatenessHistogram(), concurrency=[(0.0, 1)],
            wall_secs=1.0, cpu_secs=0.1, workers=1, gc={}, host={},
        )  # fmt: skip

    monkeypatch.setattr(runner, "run_load", fake_run_load)
    path = tmp_path / "s.yaml"
    path.write_text("steps:\n  - hangup\nslo: {max_dead_air_secs: 2}\n")
    parser = argparse.ArgumentParser()
    configure(parser)
    base = ["--url", "http://127.0.0.1:1", "--calls", "1", "--scenario", str(path)]
    assert run(parser.parse_args(base)) == EXIT_SLO
    assert "SLO missed: max_dead_air_secs: 3 > 2" in capsys.readouterr().err
    assert run(parser.parse_args([*base, "--slo", "max_dead_air_secs=5"])) == 0
