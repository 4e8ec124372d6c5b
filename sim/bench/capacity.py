"""Capacity benchmark: our server against the bare relay baseline, on one core each.

``make bench`` (= ``python -m sim.bench``) starts, in this order:

* the Live API emulator on core 0 (a long tone per turn, 1.5x real time),
* ``relay_baseline.py`` and then ``voicebot serve`` on core 1 (one at a time),
* ``voicebot loadtest`` on core 0 for each load level: N calls ramped over ``--ramp`` seconds,
  each holding ``--hold`` seconds on the line while the bot talks, the caller silent but the
  line not: ``--line-noise-dbfs`` (default the realistic noisy line of
  ``sim.caller.line_noise.DEFAULT_LINE_NOISE_DBFS``; ``off`` for digital silence) and
  ``--line-noise-color``. The table and ``bench.json`` state the line measured on.

A level is *held* when no call failed, the p99 (over calls) of each call's p99 bot-frame
inter-arrival is under 60 ms, at least 99.9 % of bot audio was delivered (received / (received
+ underruns)) and the generator's own send lateness p99 stayed under 5 ms (else the level is
reported as not measurable). Server CPU and RSS are sampled over the steady part of each level.
Then, with ``--burst-base`` calls up on a fresh server whose loop callbacks are timed one by one
(``VOICEBOT_STALL_PROBE``), a burst of 20 new calls measures the longest single stall and the loop
lag of call setup, and the gap it puts into the calls already up. Last, ``--overload`` calls
(1.6x the held level by default) go to a server with its lag guard on (the default 25 ms): how
many it admits, how many it turns away with the busy TwiML, and how the admitted calls fare.

The table gives our figures and the ratio to the baseline's; ``bench-report/bench.json`` keeps
everything. ``--quick`` runs a short version (about 4 minutes).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from sim.bench import audio_quality
from sim.bench.procs import (
    REPO,
    Proc,
    http_json,
    start_baseline,
    start_emulator,
    start_loadtest,
    start_server,
)
from sim.caller.cmd import add_line_arguments, line_from_args
from sim.caller.line_noise import describe_line

HOLD_SCENARIO = """name: bench-hold
description: stay on the line without speaking while the bot talks, then hang up
hangup_after_secs: {limit}
line_noise: {line}
playout_delay_ms: {delay}
steps:
  - pause: {{secs: {hold}}}
  - hangup
"""
GAP_LIMIT_MS = 60.0
DELIVERED_MIN_PCT = 99.9
LATENESS_LIMIT_MS = 5.0
BURST_CALLS = 20
LAG_GUARD_MS = 25.0  # the server's default VOICEBOT_LAG_GUARD_MS


def _levels(text: str) -> list[int]:
    return sorted({int(x) for x in text.split(",") if x.strip()})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m sim.bench", description=__doc__.split("\n")[0])
    p.add_argument(
        "--baseline",
        type=Path,
        default=REPO.parent / "shared" / "bench" / "relay_baseline.py",
        help="relay_baseline.py (default ../shared/bench/relay_baseline.py)",
    )
    p.add_argument("--ours", default="40,60,80,100,150,200", help="load levels for our server")
    p.add_argument("--base", default="150,200,250,300,400", help="load levels for the baseline")
    p.add_argument("--hold", type=float, default=25.0, help="seconds each call stays up")
    p.add_argument("--ramp", type=float, default=10.0, help="seconds to start a level's calls")
    p.add_argument("--burst-base", type=int, default=100, help="calls up during the burst")
    p.add_argument("--quick", action="store_true", help="short run: fewer levels, shorter calls")
    p.add_argument("--uvloop", action="store_true", help="run both servers on uvloop")
    p.add_argument("--port", type=int, default=19400, help="first port to use (uses 3)")
    p.add_argument("--out", type=Path, default=REPO / "bench-report", help="report folder")
    p.add_argument("--server-core", type=int, default=1)
    p.add_argument("--load-core", type=int, default=0)
    p.add_argument("--no-baseline", action="store_true", help="measure our server only")
    add_line_arguments(p)  # the callers' line: --line-noise-dbfs, --echo-db, …
    p.add_argument(
        "--overload",
        type=int,
        default=0,
        help="calls offered to a server with its lag guard on (0: 1.6x the held level; -1: skip)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.ours, args.base, args.hold, args.ramp = "100,150", "300", 15.0, 6.0
        args.burst_base = 60
    return args


def _summarize_load(report_dir: Path) -> dict[str, Any]:
    data = json.loads((report_dir / "report.json").read_text())
    summary, calls = data["summary"], data["calls"]
    recv = sum(c["audio_received_secs"] for c in calls)
    gaps = sum(sum(c["gaps_ms"]) for c in calls) / 1000.0
    m = summary["metrics"]
    return {
        "calls": summary["calls"],
        "failed": summary["failed"],
        "interarrival_p99_ms": m["interarrival_ms"]["p99"],
        "gap_p99_ms": m["gap_ms"]["p99"] or 0.0,
        "delivered_pct": round(100.0 * recv / (recv + gaps), 3) if recv else 0.0,
        "lateness_p99_ms": m["send_lateness_ms"]["p99"],
        "setup_ms_p99": m["setup_ms"]["p99"],
    }


class Sampler:
    """Samples a server's CPU and RSS over a window of a running level (in a thread)."""

    def __init__(self, proc: Proc, start_after: float, window: float, stats: bool) -> None:
        """Start sampling ``window`` seconds, ``start_after`` seconds from now."""
        self.proc, self.result = proc, {}  # type: ignore[var-annotated]
        self._thread = threading.Thread(
            target=self._run, args=(start_after, window, stats), daemon=True
        )
        self._thread.start()

    def _run(self, start_after: float, window: float, stats: bool) -> None:
        time.sleep(start_after)
        url = f"http://127.0.0.1:{self.proc.port}"
        if stats:
            http_json(url + "/stats/reset", "POST")
        cpu0, t0 = self.proc.cpu_secs(), time.monotonic()
        time.sleep(window)
        cpu1, t1 = self.proc.cpu_secs(), time.monotonic()
        self.result = {"cpu_pct": 100.0 * (cpu1 - cpu0) / (t1 - t0), "rss_mb": self.proc.rss_mb()}
        if stats:
            self.result["stats"] = http_json(url + "/stats")

    def join(self) -> dict[str, Any]:
        """Wait for the window; the samples."""
        self._thread.join()
        return dict(self.result)


def run_level(
    args: argparse.Namespace, server: Proc, calls: int, scenario: Path, stats: bool
) -> dict[str, Any]:
    """One load level against ``server``."""
    name = f"{server.name}-{calls}"
    report = args.out / name
    url = f"http://127.0.0.1:{server.port}"
    load = start_loadtest(
        url, calls, args.ramp, scenario, report, args.load_core, args.out, f"loadtest-{name}"
    )
    window = max(3.0, args.hold - 6.0)
    sampler = Sampler(server, args.ramp + 3.0, window, stats)
    rc = load.popen.wait(args.ramp + args.hold + 120)
    samples = sampler.join()
    if rc not in (0, 1):
        raise RuntimeError(f"bench: loadtest {name} exited with {rc}; see {load.log}")
    out = {"level": calls, **_summarize_load(report), **samples}
    lat = out["lateness_p99_ms"] or 0.0
    out["measurable"] = lat < LATENESS_LIMIT_MS
    out["held"] = bool(
        out["failed"] == 0
        and (out["interarrival_p99_ms"] or 1e9) < GAP_LIMIT_MS
        and out["delivered_pct"] >= DELIVERED_MIN_PCT
        and out["measurable"]
    )
    print(
        f"  {server.name:8s} {calls:4d} calls: held={out['held']!s:5s} "
        f"failed={out['failed']} frame-gap p99={out['interarrival_p99_ms']} ms "
        f"delivered={out['delivered_pct']}% cpu={out['cpu_pct']:.0f}% rss={out['rss_mb']:.0f} MB "
        f"gen-lateness p99={lat} ms",
        flush=True,
    )
    return out


def run_server(
    args: argparse.Namespace, server: Proc, levels: list[int], scenario: Path, stats: bool
) -> dict[str, Any]:
    """Idle figures, then the levels upwards until two in a row are not held."""
    time.sleep(2.0)
    cpu0, t0 = server.cpu_secs(), time.monotonic()
    time.sleep(3.0)
    idle = {
        "cpu_pct": 100.0 * (server.cpu_secs() - cpu0) / (time.monotonic() - t0),
        "rss_mb": server.rss_mb(),
    }
    results, misses = [], 0
    for n in levels:
        results.append(run_level(args, server, n, scenario, stats))
        misses = 0 if results[-1]["held"] else misses + 1
        if misses >= 2:
            break
        time.sleep(3.0)  # let the calls end
    held = [r for r in results if r["held"]]
    best = max(held, key=lambda r: r["level"]) if held else None
    out: dict[str, Any] = {"idle": idle, "levels": results, "held": best["level"] if best else 0}
    ref = best or (results[0] if results else None)
    if ref:
        out["cpu_per_call_pct"] = (ref["cpu_pct"] - idle["cpu_pct"]) / ref["level"]
        out["mem_per_call_mb"] = (ref["rss_mb"] - idle["rss_mb"]) / ref["level"]
        out["ref"] = ref
    return out


def run_burst(args: argparse.Namespace, server: Proc, scenario: Path) -> dict[str, Any]:
    """``--burst-base`` calls up, then 20 more at once: loop stall and the gap it causes."""
    url = f"http://127.0.0.1:{server.port}"
    base_report = args.out / "burst-base"
    base = start_loadtest(
        url, args.burst_base, args.ramp, scenario, base_report, args.load_core, args.out, "lt-base"
    )
    time.sleep(args.ramp + 4.0)
    http_json(url + "/stats/reset", "POST")
    burst = start_loadtest(
        url, BURST_CALLS, 0.0, scenario, args.out / "burst", args.load_core, args.out, "lt-burst"
    )
    time.sleep(4.0)
    stats = http_json(url + "/stats")
    base.popen.wait(args.ramp + args.hold + 120)
    burst.popen.wait(args.hold + 120)
    existing = _summarize_load(base_report)
    return {
        "base_calls": args.burst_base,
        "longest_callback_ms": stats["slow_callbacks_ms"]["max"],
        "slow_callbacks": stats["slow_callbacks_ms"]["count"],
        "loop_lag_max_ms": stats["loop_lag_ms"]["max"],
        "gc_pause_max_ms": stats["gc_pause_ms"]["max"],
        "loop_lag_p99_ms": stats["loop_lag_ms"]["p99"],
        "existing_frame_gap_p99_ms": existing["interarrival_p99_ms"],
        "existing_failed": existing["failed"],
    }


def run_overload(
    args: argparse.Namespace, server: Proc, calls: int, scenario: Path
) -> dict[str, Any]:
    """``calls`` (beyond what the server holds) against a server with its lag guard on."""
    report = args.out / f"overload-{calls}"
    load = start_loadtest(
        f"http://127.0.0.1:{server.port}", calls, args.ramp, scenario, report, args.load_core,
        args.out, f"loadtest-overload-{calls}",
    )  # fmt: skip
    load.popen.wait(args.ramp + args.hold + 120)
    data = json.loads((report / "report.json").read_text())
    calls_out = data["calls"]
    refused = [
        c for c in calls_out if not c["ok"] and "twiml" in str(c.get("failure") or "").lower()
    ]
    admitted = [c for c in calls_out if c not in refused]
    recv = sum(c["audio_received_secs"] for c in admitted)
    gaps = sum(sum(c["gaps_ms"]) for c in admitted) / 1000.0
    inter = sorted(c["interarrival_p99_ms"] for c in admitted if c["interarrival_p99_ms"])
    return {
        "offered": calls,
        "admitted": len(admitted),
        "refused": len(refused),
        "admitted_failed": sum(1 for c in admitted if not c["ok"]),
        "admitted_frame_gap_p99_ms": inter[int(0.99 * (len(inter) - 1))] if inter else None,
        "admitted_delivered_pct": round(100.0 * recv / (recv + gaps), 3) if recv else 0.0,
    }


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def print_table(
    ours: dict[str, Any],
    base: dict[str, Any] | None,
    burst: dict[str, Any],
    overload: dict[str, Any] | None,
) -> None:
    """The summary table: our figures and the ratio to the baseline's."""
    o_ref, b_ref = ours.get("ref", {}), (base or {}).get("ref", {})
    st = o_ref.get("stats", {})

    def ratio(a: Any, b: Any) -> str:
        return f"{a / b:.2f}x" if isinstance(a, int | float) and b else "-"

    b = base or {}
    rows = [
        ("calls held (one core)", ours["held"], b.get("held")),
        ("CPU per call (% of a core)", ours.get("cpu_per_call_pct"), b.get("cpu_per_call_pct")),
        ("memory per call (MB)", ours.get("mem_per_call_mb"), b.get("mem_per_call_mb")),
        ("bot-frame gap p99 (ms) at held", o_ref.get("interarrival_p99_ms"),
         b_ref.get("interarrival_p99_ms")),
        ("bot audio delivered (%)", o_ref.get("delivered_pct"), b_ref.get("delivered_pct")),
    ]  # fmt: skip
    print()
    print(f"{'metric':36s} {'ours':>10s} {'baseline':>10s} {'ours/base':>10s}")
    print("-" * 70)
    for label, a, b in rows:
        digits = 3 if "CPU" in label or "memory" in label or "delivered" in label else 1
        print(f"{label:36s} {_fmt(a, digits):>10s} {_fmt(b, digits):>10s} {ratio(a, b):>10s}")
    for key, label in (("bridge_in_ms", "bridge in (caller->model)"),
                       ("bridge_out_ms", "bridge out (model->Twilio)")):  # fmt: skip
        h = st.get(key, {})
        print(f"{label + ' p50/p99 (ms)':36s} {_fmt(h.get('p50'))}/{_fmt(h.get('p99')):>5s}")
    lag = st.get("loop_lag_ms", {})
    print(f"{'loop lag p99/max (ms) at held':36s} {_fmt(lag.get('p99'))}/{_fmt(lag.get('max'))}")
    print(
        f"{'setup burst: longest callback (ms)':36s} {_fmt(burst.get('longest_callback_ms'))} "
        f"({BURST_CALLS} new calls onto {burst.get('base_calls')}; "
        f"{burst.get('slow_callbacks')} callbacks >= 1 ms in 4 s; longest GC pause "
        f"{_fmt(burst.get('gc_pause_max_ms'))} ms)"
    )
    print(
        f"{'setup burst: loop lag max (ms)':36s} {_fmt(burst.get('loop_lag_max_ms'))} "
        f"(existing calls' frame-gap p99 {_fmt(burst.get('existing_frame_gap_p99_ms'))} ms, "
        f"failed {burst.get('existing_failed')})"
    )
    if overload:
        print(
            f"{'overload, lag guard on':36s} {overload['offered']} offered: "
            f"{overload['admitted']} admitted, {overload['refused']} refused with busy TwiML; "
            f"admitted: failed {overload['admitted_failed']}, frame-gap p99 "
            f"{_fmt(overload['admitted_frame_gap_p99_ms'])} ms, delivered "
            f"{_fmt(overload['admitted_delivered_pct'], 3)}%"
        )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit status 0 when it ran (targets are read from the table)."""
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    scenario = args.out / "hold.yaml"
    spec, delay = line_from_args(args)
    line = describe_line({**spec.model_dump(), "playout_delay_ms": delay})
    scenario.write_text(
        HOLD_SCENARIO.format(
            hold=args.hold, limit=args.hold + 30, line=json.dumps(spec.model_dump()), delay=delay
        )
    )
    procs: list[Proc] = []
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so the `finally` below stops the
    # emulator, servers and load generators this run started instead of leaving them running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    result["line"] = {**spec.model_dump(), "playout_delay_ms": delay, "text": line}
    print(f"callers' line: {line}", flush=True)
    try:
        emulator = start_emulator(args.out, args.load_core, tone_secs=args.hold + 60)
        procs.append(emulator)
        base = None
        if not args.no_baseline:
            print(f"baseline: {args.baseline}", flush=True)
            relay = start_baseline(
                args.baseline, args.port, args.out, args.server_core, args.uvloop
            )
            procs.append(relay)
            base = run_server(args, relay, _levels(args.base), scenario, stats=False)
            relay.stop()
            result["baseline"] = base
        print("our server", flush=True)
        server = start_server(
            args.port + 1, emulator, args.out, args.server_core, args.uvloop, lag_guard_ms=0
        )
        procs.append(server)
        ours = run_server(args, server, _levels(args.ours), scenario, stats=True)
        result["ours"] = ours
        # The burst lands on calls the server holds (at most --burst-base of them), on a fresh
        # server whose callbacks are timed one by one (the probe costs ~1 % of a core).
        if ours["held"]:
            args.burst_base = min(args.burst_base, ours["held"])
        server.stop()
        probed = start_server(
            args.port + 2, emulator, args.out, args.server_core, args.uvloop, lag_guard_ms=0,
            stall_probe=True, name="server-probed",
        )  # fmt: skip
        procs.append(probed)
        burst = run_burst(args, probed, scenario)
        result["burst"] = burst
        probed.stop()
        overload = None
        if args.overload >= 0:
            calls = args.overload or int(round(1.6 * max(ours["held"], 50), -1))
            guarded = start_server(
                args.port + 1, emulator, args.out, args.server_core, args.uvloop,
                lag_guard_ms=LAG_GUARD_MS, name="server-guarded",
            )  # fmt: skip
            procs.append(guarded)
            overload = run_overload(args, guarded, calls, scenario)
            result["overload"] = overload
        print_table(ours, base, burst, overload)
        print(f"{'measured on the line':36s} {line}")
        print("\nresampling quality (python -m sim.bench.audio_quality):")
        audio_quality.main([])
    finally:
        for p in reversed(procs):
            p.stop()
        (args.out / "bench.json").write_text(json.dumps(result, indent=2))
        print(f"\nfull results: {args.out / 'bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
