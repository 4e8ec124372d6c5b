"""One load level and a server's levels for ``sim.bench``: run, sample, judge held or not.

:func:`run_level` runs ``voicebot loadtest`` with N calls against a server while
:class:`Sampler` measures the server over the steady part of the level (CPU, RSS, ``/stats``,
the local VAD's counters, the stage sampler's counts when it runs); :func:`summarize_load`
reads the load generator's report. :func:`run_server` climbs the levels; :func:`run_burst` and
:func:`run_overload` are the call-setup burst and the lag guard's overload run.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path
from typing import Any

from sim.bench.procs import Proc, http_json, start_loadtest
from sim.bench.stage_table import read_counts, window

GAP_LIMIT_MS = 60.0
DELIVERED_MIN_PCT = 99.9
LATENESS_LIMIT_MS = 5.0
BURST_CALLS = 20


def summarize_load(report_dir: Path) -> dict[str, Any]:
    """A level's figures from the load generator's ``report.json``."""
    data = json.loads((report_dir / "report.json").read_text())
    summary, calls = data["summary"], data["calls"]
    recv = sum(c["audio_received_secs"] for c in calls)
    gaps = sum(sum(c["gaps_ms"]) for c in calls) / 1000.0
    spoken = sum(c.get("audio_sent_secs", 0.0) for c in calls)
    up = sum(c.get("duration_secs", 0.0) for c in calls)
    m = summary["metrics"]
    clear = m.get("bargein_clear_ms") or {}
    return {
        "calls": summary["calls"],
        "failed": summary["failed"],
        "interarrival_p99_ms": m["interarrival_ms"]["p99"],
        "gap_p99_ms": m["gap_ms"]["p99"] or 0.0,
        "delivered_pct": round(100.0 * recv / (recv + gaps), 3) if recv else 0.0,
        "lateness_p99_ms": m["send_lateness_ms"]["p99"],
        "setup_ms_p99": m["setup_ms"]["p99"],
        "speaking_pct": round(100.0 * spoken / up, 1) if up else 0.0,
        "bargeins": summary.get("bargeins", 0),
        "bargeins_unanswered": summary.get("bargeins_unanswered", 0),
        "bargein_clear_p50_ms": clear.get("p50"),
        "bargein_clear_p95_ms": clear.get("p95"),
        "stale_frames": summary.get("stale_frames", 0),
    }


def vad_figures(
    before: dict[str, Any] | None, after: dict[str, Any] | None, secs: float, calls: int
) -> dict[str, Any] | None:
    """The local VAD's cost over a window, from its cumulative ``/stats`` counters.

    Takes the counters as the detector reports them (``pipelines.audio.batched_vad``): a count
    whose name has ``window`` in it and times whose names end in ``secs`` (in inference, on the
    loop), summed as the VAD's cost. None without them.
    """
    if not before or not after:
        return None
    delta = {
        k: v - before[k]
        for k, v in after.items()
        if isinstance(v, int | float) and isinstance(before.get(k), int | float)
    }
    windows = next((v for k, v in delta.items() if "window" in k), None)
    times = [v for k, v in delta.items() if k.endswith("secs")]
    busy = sum(times) if times else None
    out: dict[str, Any] = {"delta": delta}
    if windows:
        out["windows_per_sec"] = round(windows / secs, 1)
        out["windows_per_call_sec"] = round(windows / secs / calls, 2) if calls else None
    if windows and busy is not None:
        out["us_per_window"] = round(1e6 * busy / windows, 2)
        out["core_pct_per_call"] = round(100.0 * busy / secs / calls, 4) if calls else None
    return out


class Sampler:
    """Samples a server over a window of a running level (in a thread)."""

    def __init__(self, proc: Proc, start_after: float, window_secs: float, stats: bool) -> None:
        """Start sampling ``window_secs`` seconds, ``start_after`` seconds from now."""
        self.proc, self.result = proc, {}  # type: ignore[var-annotated]
        self._thread = threading.Thread(
            target=self._run, args=(start_after, window_secs, stats), daemon=True
        )
        self._thread.start()

    def _run(self, start_after: float, window_secs: float, stats: bool) -> None:
        time.sleep(start_after)
        url = self.proc.info.get("ops_url", "")  # /stats: the operations listener
        profile = Path(self.proc.info["profile"]) if "profile" in self.proc.info else None
        before: dict[str, Any] = {}
        if stats:
            http_json(url + "/stats/reset", "POST")
            before = http_json(url + "/stats")
        counts0 = read_counts(profile) if profile else None
        cpu0, t0 = self.proc.cpu_secs(), time.monotonic()
        time.sleep(window_secs)
        cpu1, t1 = self.proc.cpu_secs(), time.monotonic()
        self.result = {
            "cpu_pct": 100.0 * (cpu1 - cpu0) / (t1 - t0),
            "rss_mb": self.proc.rss_mb(),
            "window_secs": round(t1 - t0, 2),
        }
        if stats:
            after = http_json(url + "/stats")
            self.result["stats"] = after
            self.result["vad_counters"] = (before.get("vad"), after.get("vad"))
        if profile:
            counts1 = read_counts(profile)
            if counts1:
                self.result["profile"] = window(counts0, counts1)

    def join(self) -> dict[str, Any]:
        """Wait for the window; the samples."""
        self._thread.join()
        return dict(self.result)


def run_level(
    args: argparse.Namespace, server: Proc, calls: int, scenario: Path, stats: bool, tag: str
) -> dict[str, Any]:
    """One load level against ``server`` (``tag`` keeps report folders of lines apart)."""
    name = f"{server.name}-{tag + '-' if tag else ''}{calls}"
    report = args.out / name
    url = f"http://127.0.0.1:{server.port}"
    load = start_loadtest(
        url, calls, args.ramp, scenario, report, args.load_core, args.out, f"loadtest-{name}",
        nice=args.load_nice,
    )  # fmt: skip
    window_secs = max(3.0, args.hold - 6.0)
    sampler = Sampler(server, args.ramp + 3.0, window_secs, stats)
    rc = load.popen.wait(args.ramp + args.hold + 120)
    samples = sampler.join()
    if rc not in (0, 1):
        raise RuntimeError(f"bench: loadtest {name} exited with {rc}; see {load.log}")
    vad = samples.pop("vad_counters", None)
    out = {"level": calls, **summarize_load(report), **samples}
    if vad:
        out["vad"] = vad_figures(vad[0], vad[1], samples["window_secs"], calls)
    lat = out["lateness_p99_ms"] or 0.0
    out["measurable"] = lat < LATENESS_LIMIT_MS
    # Callers who talk barge into every reply, so every call has many reply starts, where the
    # server sends what it has up to the playout lead and then waits for the model's next burst:
    # ~14 arrival gaps over 60 ms per call that the phone's buffer covers (the caller hears no
    # hole; sim/caller/result.py). That scenario is judged on what is heard instead: the p99 of
    # the holes (underruns) in the bot's audio.
    gap_key = "gap_p99_ms" if tag == "speaking" else "interarrival_p99_ms"
    out["held_on"] = gap_key
    out["held"] = bool(
        out["failed"] == 0
        and (out[gap_key] if out[gap_key] is not None else 1e9) < GAP_LIMIT_MS
        and out["delivered_pct"] >= DELIVERED_MIN_PCT
        and out["measurable"]
    )
    extra = ""
    if out["bargeins"]:
        extra = (
            f" barge-in->clear p50/p95={out['bargein_clear_p50_ms']}/"
            f"{out['bargein_clear_p95_ms']} ms speaking={out['speaking_pct']}%"
        )
    print(
        f"  {server.name:8s} {calls:4d} calls: held={out['held']!s:5s} "
        f"failed={out['failed']} frame-gap p99={out['interarrival_p99_ms']} ms "
        f"hole p99={out['gap_p99_ms']} ms "
        f"delivered={out['delivered_pct']}% cpu={out['cpu_pct']:.0f}% rss={out['rss_mb']:.0f} MB "
        f"gen-lateness p99={lat} ms{extra}",
        flush=True,
    )
    return out


def run_server(
    args: argparse.Namespace,
    server: Proc,
    levels: list[int],
    scenario: Path,
    stats: bool,
    tag: str,
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
        results.append(run_level(args, server, n, scenario, stats, tag))
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
    ops_url = server.info["ops_url"]  # /stats: the operations listener
    http_json(ops_url + "/stats/reset", "POST")
    burst = start_loadtest(
        url, BURST_CALLS, 0.0, scenario, args.out / "burst", args.load_core, args.out, "lt-burst"
    )
    time.sleep(4.0)
    stats = http_json(ops_url + "/stats")
    base.popen.wait(args.ramp + args.hold + 120)
    burst.popen.wait(args.hold + 120)
    existing = summarize_load(base_report)
    return {
        "base_calls": args.burst_base,
        "burst_calls": BURST_CALLS,
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
