"""The capacity benchmark's printed report: per line, speaking scenario, stages, burst, overload.

Every figure goes out with its conditions (the line, the emulator's pace, the cores) and, where
the relay baseline has the same figure from the same run, the ratio ours/baseline.
:func:`line_summary` also computes the derived figures ``bench.json`` keeps (ratios, the
silence-versus-noise check), so the table and the file agree.
"""

from __future__ import annotations

from typing import Any

SILENCE_MAX_SPEEDUP = 1.20  # silence may hold at most 20 % more calls than -44 dBFS

LINE_METRICS = (  # (key, label, digits, from the held level (ref) or the run)
    ("held", "calls held (one core)", 0, "run"),
    ("cpu_per_call_pct", "server CPU per call (% of a core)", 3, "run"),
    ("mem_per_call_mb", "memory (RSS) per call (MB)", 3, "run"),
    ("interarrival_p99_ms", "bot-frame gap p99 (ms)", 1, "ref"),
    ("delivered_pct", "bot audio delivered (%)", 3, "ref"),
    ("lateness_p99_ms", "generator lateness p99 (ms)", 2, "ref"),
    ("cpu_pct", "server CPU at that level (%)", 0, "ref"),
)


def fmt(v: Any, digits: int = 1) -> str:
    """A figure for the table; ``-`` when there is none."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def ratio(a: Any, b: Any) -> float | None:
    """``a / b`` when both are figures and ``b`` is not 0."""
    ok = isinstance(a, int | float) and isinstance(b, int | float)
    return round(a / b, 3) if ok and b else None


def _value(run: dict[str, Any] | None, key: str, where: str) -> Any:
    if not run:
        return None
    return run.get(key) if where == "run" else run.get("ref", {}).get(key)


def line_summary(ours: dict[str, Any], base: dict[str, Any] | None) -> dict[str, Any]:
    """One line's headline figures: ``{key: {"ours", "base", "ratio"}}``."""
    out: dict[str, Any] = {}
    for key, _label, _digits, where in LINE_METRICS:
        a, b = _value(ours, key, where), _value(base, key, where)
        out[key] = {"ours": a, "base": b, "ratio": ratio(a, b)}
    return out


def silence_vs_noise(ours_by_line: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """Held on digital silence / held at -44 dBFS (None unless both lines ran)."""
    silence, noise = ours_by_line.get("silence"), ours_by_line.get("-44")
    if not silence or not noise:
        return None
    r = ratio(silence["held"], noise["held"])
    return {
        "silence_held": silence["held"],
        "noise_held": noise["held"],
        "ratio": r,
        "max_ratio": SILENCE_MAX_SPEEDUP,
        "ok": r is not None and r <= SILENCE_MAX_SPEEDUP,
    }


def print_line_block(ours: dict[str, Any], base: dict[str, Any] | None) -> None:
    """Each metric of one line: ours, the baseline's and the ratio ours/baseline."""
    print(f"  {'metric':36s} {'ours':>10s} {'baseline':>10s} {'ours/base':>10s}")
    summary = line_summary(ours, base)
    for key, label, digits, _where in LINE_METRICS:
        row = summary[key]
        r = f"{row['ratio']:.2f}x" if row["ratio"] is not None else "-"
        print(
            f"  {label:36s} {fmt(row['ours'], digits):>10s} {fmt(row['base'], digits):>10s}"
            f" {r:>10s}"
        )
    vad = ours.get("ref", {}).get("vad")
    if vad and "us_per_window" in vad:
        print(
            f"  {'local VAD (its counters)':36s} {fmt(vad['us_per_window'], 1)} us/window, "
            f"{fmt(vad.get('core_pct_per_call'), 4)} % of a core per call, "
            f"{fmt(vad.get('windows_per_sec'), 0)} windows/s"
        )


def print_lines(
    lines: list[dict[str, Any]],
    ours_by_line: dict[str, dict[str, Any]],
    base: dict[str, Any] | None,
    base_line: str,
) -> None:
    """One block per line, then digital silence against -44 dBFS."""
    for line in lines:
        ours = ours_by_line.get(line["key"])
        if not ours:
            continue
        at = ours.get("ref", {}).get("level")
        print(f"\nline: {line['text']}  (figures at {fmt(at)} calls; baseline on {base_line})")
        print_line_block(ours, base)
    check = silence_vs_noise(ours_by_line)
    if check:
        verdict = "ok" if check["ok"] else "NOT MET"
        print(
            f"\ndigital silence vs -44 dBFS, calls held: {check['silence_held']} / "
            f"{check['noise_held']} = {fmt(check['ratio'], 2)}x "
            f"(target <= {SILENCE_MAX_SPEEDUP:.2f}x: {verdict})"
        )


def print_table(
    ours: dict[str, Any],
    base: dict[str, Any] | None,
    burst: dict[str, Any] | None,
    overload: dict[str, Any] | None,
) -> None:
    """One line's block, bridge latency, the burst and overload (the whole report for a line)."""
    print()
    print_line_block(ours, base)
    print_bridge(ours)
    print_burst_overload(burst, overload)


def print_speaking(speaking: dict[str, Any], line_text: str) -> None:
    """The speaking scenario: held, per-call CPU and barge-in -> clear."""
    ref = speaking.get("ref", {})
    print(f"\nspeaking scenario (talker.yaml: barge-ins, ~30 % speech) on {line_text}:")
    print(
        f"  calls held {speaking.get('held')}; at {fmt(ref.get('level'))} calls: caller speaking "
        f"{fmt(ref.get('speaking_pct'))} % of the time, {fmt(ref.get('bargeins'))} barge-ins "
        f"({fmt(ref.get('bargeins_unanswered'))} unanswered), barge-in -> clear p50/p95 "
        f"{fmt(ref.get('bargein_clear_p50_ms'))}/{fmt(ref.get('bargein_clear_p95_ms'))} ms, "
        f"stale frames {fmt(ref.get('stale_frames'))}, CPU per call "
        f"{fmt(speaking.get('cpu_per_call_pct'), 3)} %, bot-frame gap p99 "
        f"{fmt(ref.get('interarrival_p99_ms'))} ms, underrun p99 {fmt(ref.get('gap_p99_ms'))} ms, "
        f"delivered {fmt(ref.get('delivered_pct'), 3)} %"
    )


def print_stages(profile: dict[str, Any], line_text: str) -> None:
    """The per-stage CPU table of one profiled level."""
    print(
        f"\nwhere our server's CPU goes, {profile['calls']} calls on {line_text} "
        f"(stack sampler, {profile['samples']} busy samples over {fmt(profile['secs'])} s, "
        f"server at {fmt(profile['cpu_pct'], 0)} % of a core; "
        f"{fmt(profile.get('unprofiled_cpu_pct'), 0)} % at the same level unprofiled):"
    )
    print(f"  {'stage':50s} {'self %':>7s} {'incl %':>7s} {'% core':>7s} {'per call':>9s}")
    for st in profile["stages"]:
        print(
            f"  {st['label']:50s} {st['self_pct']:7.1f} {st['incl_pct']:7.1f} "
            f"{st['cpu_pct']:7.2f} {fmt(st['cpu_per_call_pct'], 4):>9s}"
        )
    print("  (self: innermost stage on the stack; incl: anywhere on it; per call: % of a core)")
    if profile.get("top"):
        top = ", ".join(f"{f} {p}%" for f, p in profile["top"][:8])
        print(f"  hottest functions: {top}")


def print_burst_overload(burst: dict[str, Any] | None, overload: dict[str, Any] | None) -> None:
    """Call-setup burst and the lag guard under overload."""
    if burst:
        print(
            f"{'setup burst: longest callback (ms)':36s} "
            f"{fmt(burst.get('longest_callback_ms'))} ({burst.get('burst_calls', 20)} new calls "
            f"onto {burst.get('base_calls')}; {burst.get('slow_callbacks')} callbacks >= 1 ms "
            f"in 4 s; longest GC pause {fmt(burst.get('gc_pause_max_ms'))} ms)"
        )
        print(
            f"{'setup burst: loop lag max (ms)':36s} {fmt(burst.get('loop_lag_max_ms'))} "
            f"(existing calls' frame-gap p99 {fmt(burst.get('existing_frame_gap_p99_ms'))} ms, "
            f"failed {burst.get('existing_failed')})"
        )
    if overload:
        print(
            f"{'overload, lag guard on':36s} {overload['offered']} offered: "
            f"{overload['admitted']} admitted, {overload['refused']} refused with busy TwiML; "
            f"admitted: failed {overload['admitted_failed']}, frame-gap p99 "
            f"{fmt(overload['admitted_frame_gap_p99_ms'])} ms, delivered "
            f"{fmt(overload['admitted_delivered_pct'], 3)}%"
        )


def print_bridge(ours: dict[str, Any]) -> None:
    """Bridge latency and loop lag at the held level (from ``/stats``)."""
    st = ours.get("ref", {}).get("stats", {})
    for key, label in (("bridge_in_ms", "bridge in (caller->model)"),
                       ("bridge_out_ms", "bridge out (model->Twilio)")):  # fmt: skip
        h = st.get(key, {})
        print(f"{label + ' p50/p99 (ms)':36s} {fmt(h.get('p50'))}/{fmt(h.get('p99'))}")
    lag = st.get("loop_lag_ms", {})
    print(f"{'loop lag p99/max (ms) at held':36s} {fmt(lag.get('p99'))}/{fmt(lag.get('max'))}")
