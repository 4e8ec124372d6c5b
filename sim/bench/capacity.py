"""Capacity benchmark on real phone lines: our server against the bare relay, one core each.

``make bench`` (= ``python -m sim.bench``) starts, in this order:

* the Live API emulator on core 0 (one long tone per turn, 1.5x real time),
* the bare relay (``sim/bench/relay_baseline.py``, or ``--baseline PATH``) on core 1: its load
  levels, on the noisy reference line (its work does not depend on what the caller sends),
* ``voicebot serve`` on core 1, a fresh one per line (``--lines``, default digital silence, -60,
  -50 and -44 dBFS pink noise; ``sim.bench.lines``): load levels upwards until two in a row are
  not held, the callers silent on the line while the bot talks (the ``hold`` scenario),
* the same on the reference line (-44 dBFS) with callers who talk ~30 % of the time, barging
  into every reply (the ``speaking`` scenario, ``sim/loadtest/scenarios/talker.yaml``),
* one level on the reference line with the stage sampler on (``VOICEBOT_PROFILE``,
  ``bot.stage_profile``): where the server's CPU goes, stage by stage,
* a burst of 20 new calls onto ``--burst-base`` calls on a server whose loop callbacks are
  timed (``VOICEBOT_STALL_PROBE``), then ``--overload`` calls (1.6x the held level by default)
  to a server with its lag guard on,

each load level run by ``voicebot loadtest`` on core 0: N calls ramped over ``--ramp`` seconds,
each holding ``--hold`` seconds. A level is *held* when no call failed, the p99 (over calls)
of each call's p99 bot-frame inter-arrival is under 60 ms, at least 99.9 % of bot audio was
delivered (received / (received + underruns)) and the generator's own send lateness p99 stayed
under 5 ms (else the level is not measurable). Server CPU, RSS, ``/stats`` and the local VAD's
counters are sampled over the steady part of each level.

The report gives, per line, our figures and the ratio to the baseline's from the same run, the
held count on digital silence against -44 dBFS (the issue's limit: 1.2x), the speaking
scenario's barge-in -> ``clear`` p50/p95, and the stage table; every block names its line and
the run's conditions. ``bench-report/bench.json`` keeps everything. ``--quick`` (about 5
minutes) measures -44 dBFS alone with fewer, shorter levels; options given with it win.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import time
from pathlib import Path
from typing import Any

from sim.bench import audio_quality, table
from sim.bench.levels import run_burst, run_overload, run_server
from sim.bench.lines import (
    ALL_LINES,
    QUICK_LINES,
    noisy_reference,
    parse_lines,
    write_hold,
    write_speaking,
)
from sim.bench.procs import (
    EMULATOR_PACE,
    OUR_BASELINE,
    REPO,
    Proc,
    start_baseline,
    start_emulator,
    start_server,
)
from sim.bench.stage_table import breakdown
from sim.caller.cmd import add_line_arguments, line_from_args

LAG_GUARD_MS = 25.0  # the server's default VOICEBOT_LAG_GUARD_MS
# Option -> (full run default, --quick default); None here means "unset": --quick fills it.
DEFAULTS: dict[str, tuple[Any, Any]] = {
    "ours": ("40,60,80,100,150,200", "100,150"),
    "base": ("150,200,250,300,400", "300"),
    "speaking": ("", "held"),  # "": the same levels as --ours
    "lines": (ALL_LINES, QUICK_LINES),
    "hold": (25.0, 15.0),
    "ramp": (10.0, 6.0),
    "burst_base": (100, 60),
}


def levels_of(text: str) -> list[int]:
    """``"150, 60,100"`` -> ``[60, 100, 150]``."""
    return sorted({int(x) for x in text.split(",") if x.strip()})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (``--quick`` sets only the ones not given)."""
    p = argparse.ArgumentParser(prog="python -m sim.bench", description=__doc__.split("\n")[0])
    p.add_argument(
        "--baseline",
        type=Path,
        default=OUR_BASELINE,
        help="the relay baseline script (default: ours, sim/bench/relay_baseline.py; e.g. "
        "../shared/bench/relay_baseline.py)",
    )
    p.add_argument("--ours", help=f"load levels for our server (default {DEFAULTS['ours'][0]})")
    p.add_argument("--base", help=f"load levels for the baseline (default {DEFAULTS['base'][0]})")
    p.add_argument(
        "--lines",
        help=f"callers' lines: silence and/or noise levels in dBFS (default {ALL_LINES}; "
        f"--quick: {QUICK_LINES}; --line-noise-dbfs X alone means --lines X)",
    )
    p.add_argument(
        "--speaking",
        help="levels for the speaking scenario (default: those of --ours; --quick: 'held', "
        "one level at the count held on the reference line; 'off' skips it)",
    )
    p.add_argument("--profile-calls", type=int, default=0, help="calls for the stage profile "
                   "(0: the count held on the reference line; -1: skip)")  # fmt: skip
    p.add_argument("--hold", type=float, help="seconds each call stays up (default 25)")
    p.add_argument("--ramp", type=float, help="seconds to start a level's calls (default 10)")
    p.add_argument("--burst-base", type=int, help="calls up during the burst (default 100)")
    p.add_argument("--quick", action="store_true", help="short run (about 5 minutes)")
    p.add_argument("--uvloop", action="store_true", help="run both servers on uvloop")
    p.add_argument("--port", type=int, default=19400, help="first port to use (uses 3)")
    p.add_argument("--out", type=Path, default=REPO / "bench-report", help="report folder")
    p.add_argument("--server-core", type=int, default=1)
    p.add_argument("--load-core", type=int, default=0)
    p.add_argument("--no-baseline", action="store_true", help="measure our server only")
    add_line_arguments(p)  # colour, echo and playout delay of every line
    p.add_argument(
        "--overload",
        type=int,
        default=0,
        help="calls offered to a server with its lag guard on (0: 1.6x the held level; -1: skip)",
    )
    p.set_defaults(load_nice=0)  # the generator's niceness (sim.bench.scale raises its priority)
    args = p.parse_args(argv)
    if args.lines is None and args.line_noise_dbfs is not None:
        args.lines = "silence" if args.line_noise_dbfs == "off" else str(args.line_noise_dbfs)
    for name, (full, quick) in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    return args


def conditions(args: argparse.Namespace) -> dict[str, Any]:
    """What every figure was measured under (printed and kept in ``bench.json``)."""
    return {
        "server_core": args.server_core,
        "load_core": args.load_core,
        "cpus": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "emulator": f"tone replies at {EMULATOR_PACE:g}x real time, on core {args.load_core} "
        "with the load generator",
        "hold_secs": args.hold,
        "ramp_secs": args.ramp,
        "event_loop": "uvloop" if args.uvloop else "asyncio",
        "python": platform.python_version(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def conditions_text(c: dict[str, Any]) -> str:
    """One line of :func:`conditions`."""
    return (
        f"server on core {c['server_core']}, load generator + emulator ({c['emulator']}) on core "
        f"{c['load_core']} of {c['cpus']}; calls {c['hold_secs']:g} s, ramp {c['ramp_secs']:g} s; "
        f"{c['event_loop']}, Python {c['python']}; load average at start "
        f"{'/'.join(str(x) for x in c['loadavg_at_start'])}"
    )


def profile_level(
    args: argparse.Namespace, emulator: Proc, calls: int, scenario: Path, procs: list[Proc]
) -> dict[str, Any]:
    """One level on a fresh server with the stage sampler on: the per-stage breakdown."""
    path = args.out / "stage-profile.json"
    path.unlink(missing_ok=True)
    server = start_server(
        args.port + 2, emulator, args.out, args.server_core, args.uvloop, lag_guard_ms=0,
        name="server-profiled", profile=path,
    )  # fmt: skip
    procs.append(server)
    try:
        res = run_server(args, server, [calls], scenario, stats=True, tag="profile")
    finally:
        server.stop()
    ref = res["levels"][0]
    counts = ref.get("profile")
    if not counts:
        return {"error": f"no sampler counts in {path}; see {server.log}", "calls": calls}
    return {**breakdown(counts, ref["cpu_pct"], calls), "level": ref}


def report(result: dict[str, Any], lines: list[Any], ref_text: str) -> None:
    """Print the report and add its derived figures (ratios, silence vs noise) to ``result``."""
    base, ours = result.get("baseline"), result["ours"]
    result["summary"] = {key: table.line_summary(run, base) for key, run in ours.items()}
    result["silence_vs_noise"] = table.silence_vs_noise(ours)
    print(f"\nconditions: {conditions_text(result['conditions'])}")
    table.print_lines([line.to_dict() for line in lines], ours, base, ref_text)
    if result.get("speaking"):
        table.print_speaking(result["speaking"], ref_text)
    prof = result.get("profile")
    if prof and "stages" in prof:
        same = [
            lv["cpu_pct"]
            for lv in ours[result["reference_line"]]["levels"]
            if lv["level"] == prof["calls"]
        ]
        prof["unprofiled_cpu_pct"] = round(same[0], 1) if same else None
        table.print_stages(prof, ref_text)
    elif prof:
        print(f"\nstage profile: {prof.get('error')}")
    print()
    table.print_bridge(ours[result["reference_line"]])
    table.print_burst_overload(result.get("burst"), result.get("overload"))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit status 0 when it ran (targets are read from the report)."""
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    spec, delay = line_from_args(args)
    lines = parse_lines(args.lines, spec, delay)
    ref_line = noisy_reference(lines)
    cond = conditions(args)
    procs: list[Proc] = []
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so the `finally` below stops the
    # emulator, servers and load generators this run started instead of leaving them running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result: dict[str, Any] = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "conditions": cond,
        "lines": [line.to_dict() for line in lines],
        "reference_line": ref_line.key,
        "ours": {},
    }
    print(f"conditions: {conditions_text(cond)}", flush=True)
    print(f"lines: {'; '.join(line.text for line in lines)}", flush=True)
    try:
        emulator = start_emulator(args.out, args.load_core, tone_secs=args.hold + 60)
        procs.append(emulator)
        ref_hold = write_hold(args.out, ref_line, args.hold)
        base = None
        if not args.no_baseline:
            print(f"baseline: {args.baseline} on {ref_line.text}", flush=True)
            relay = start_baseline(
                args.baseline, args.port, args.out, args.server_core, args.uvloop
            )
            procs.append(relay)
            base = run_server(args, relay, levels_of(args.base), ref_hold, stats=False, tag="")
            relay.stop()
            result["baseline"] = {**base, "line": ref_line.key, "script": str(args.baseline)}
        for line in lines:
            print(f"our server, hold scenario on {line.text}", flush=True)
            server = start_server(
                args.port + 1, emulator, args.out, args.server_core, args.uvloop, lag_guard_ms=0
            )
            procs.append(server)
            scenario = write_hold(args.out, line, args.hold)
            result["ours"][line.key] = run_server(
                args, server, levels_of(args.ours), scenario, stats=True, tag=line.key
            )
            server.stop()
        ours_ref = result["ours"][ref_line.key]
        held = ours_ref["held"] or min(levels_of(args.ours))
        speaking = None
        if args.speaking != "off":
            levels = [held] if args.speaking == "held" else levels_of(args.speaking or args.ours)
            print(f"our server, speaking scenario on {ref_line.text}", flush=True)
            server = start_server(
                args.port + 1, emulator, args.out, args.server_core, args.uvloop, lag_guard_ms=0,
                name="server-speaking",
            )  # fmt: skip
            procs.append(server)
            scenario = write_speaking(args.out, ref_line, args.hold)
            speaking = run_server(args, server, levels, scenario, stats=True, tag="speaking")
            server.stop()
            result["speaking"] = {**speaking, "line": ref_line.key}
        if args.profile_calls >= 0:
            calls = args.profile_calls or held
            print(f"stage profile: {calls} calls on {ref_line.text}", flush=True)
            result["profile"] = profile_level(args, emulator, calls, ref_hold, procs)
        # The burst lands on calls the server holds (at most --burst-base of them), on a fresh
        # server whose callbacks are timed one by one (the probe costs ~1 % of a core).
        if ours_ref["held"]:
            args.burst_base = min(args.burst_base, ours_ref["held"])
        probed = start_server(
            args.port + 2, emulator, args.out, args.server_core, args.uvloop, lag_guard_ms=0,
            stall_probe=True, name="server-probed",
        )  # fmt: skip
        procs.append(probed)
        result["burst"] = run_burst(args, probed, ref_hold)
        probed.stop()
        if args.overload >= 0:
            calls = args.overload or int(round(1.6 * max(ours_ref["held"], 50), -1))
            guarded = start_server(
                args.port + 1, emulator, args.out, args.server_core, args.uvloop,
                lag_guard_ms=LAG_GUARD_MS, name="server-guarded",
            )  # fmt: skip
            procs.append(guarded)
            result["overload"] = run_overload(args, guarded, calls, ref_hold)
        report(result, lines, ref_line.text)
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
