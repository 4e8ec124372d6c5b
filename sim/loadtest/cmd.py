"""``voicebot loadtest``: many simulated Twilio calls, live progress, a report, SLO gates."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import Any

EXIT_OK, EXIT_SLO, EXIT_USAGE, EXIT_ERROR = 0, 1, 2, 3
LATENESS_WARN_MS = 5.0
FOREIGN_LOAD_WARN_PCT = 10.0
SERVER_BUSY_WARN_PCT = 95.0


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``loadtest`` command's arguments."""
    from sim.caller.cmd import add_line_arguments
    from sim.loadtest.report import RATIO_SLOS

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "SLO names: p50_|p95_|p99_|max_ + setup_ms, setup_audio_ms, greeting_ms, response_ms,\n"
        "  bargein_clear_ms, bargein_silence_ms, gap_ms, interarrival_ms, send_lateness_ms,\n"
        "  dead_air_secs (each call's longest silence it did not cause, seconds);\n"
        f"  {', '.join(RATIO_SLOS)} (percent); max_stale_frames, max_protocol_errors (totals).\n"
        "  e.g. --slo p95_response_ms=1200 --slo max_failed_pct=1 --slo max_dead_air_secs=2\n"
        "  A scenario's own `slo:` mapping applies too; --slo overrides it name by name.\n"
        "Exit status: 0 all SLOs met, 1 an SLO missed, 2 bad arguments, 3 the run failed."
    )
    parser.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--calls", type=int, default=50, metavar="N", help="calls to place")
    parser.add_argument("--concurrency", type=int, default=10, metavar="C", help="calls at once")
    parser.add_argument(
        "--ramp", type=float, default=0.0, metavar="SECS", help="spread the first C call starts"
    )
    parser.add_argument(
        "--scenario",
        default="default",
        metavar="FILE.yaml",
        help="scenario file, or a built-in name (default, bargein)",
    )
    parser.add_argument("--report", metavar="DIR", help="write DIR/report.json and report.html")
    parser.add_argument(
        "--slo", action="append", default=[], metavar="NAME=VALUE", help="fail when missed"
    )
    parser.add_argument("--workers", type=int, default=1, metavar="K", help="generator processes")
    parser.add_argument("--auth-token", help="sign webhooks and stream upgrades")
    parser.add_argument("--persona", help="persona id for every call (?persona=ID)")
    parser.add_argument("--seed", type=int, help="random seed for scenario probabilities")
    parser.add_argument(
        "--uvloop",
        action="store_true",
        help="run the generator on uvloop (timestamps stay precise)",
    )
    parser.add_argument(
        "--server-pid",
        type=int,
        metavar="PID",
        help="the server's PID when it runs on this machine: report its CPU use",
    )
    parser.add_argument(
        "--nice",
        type=int,
        metavar="N",
        help="generator CPU priority (-20..19; negative needs root): on a shared core, -10 "
        "makes the scheduler run the generator's sends before other processes' work",
    )
    parser.add_argument(
        "--no-gc-tuning",
        dest="tune_gc",
        action="store_false",
        help="leave the garbage collector at Python's defaults (for comparison runs)",
    )
    add_line_arguments(parser)


class Progress:
    """Running counts and latency percentiles; rich progress bar on a TTY, plain lines otherwise."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.active = self.done = self.failed = 0
        self.latencies: list[float] = []
        self.lock = threading.Lock()

    def __call__(self, kind: str, rec: dict[str, Any] | None) -> None:
        """Count a call starting (``rec`` None) or ending."""
        with self.lock:
            if kind == "start":
                self.active += 1
            elif rec is not None:
                self.active -= 1
                self.done += 1
                self.failed += 0 if rec["ok"] else 1
                self.latencies.extend(rec["response_latencies_ms"])

    def line(self) -> str:
        """One status line."""
        from sim.caller.result import percentile

        with self.lock:
            p50 = percentile(self.latencies, 50)
            p95 = percentile(self.latencies, 95)
            s = f"active {self.active:4d}  done {self.done}/{self.total}  failed {self.failed}"
        f = "-" if p50 is None else f"{p50:.0f}"
        g = "-" if p95 is None else f"{p95:.0f}"
        return s + f"  response p50 {f} ms  p95 {g} ms"


def _drive(run_fn: Any, progress: Progress) -> Any:
    """Run ``run_fn`` in a thread while showing progress in this one."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = run_fn()
        except BaseException as e:
            result["error"] = e

    th = threading.Thread(target=target, name="loadgen-main", daemon=True)
    th.start()
    if sys.stderr.isatty():
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bar

        with Bar(
            TextColumn("calls"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.description}"), transient=False,
        ) as bar:  # fmt: skip
            task = bar.add_task("", total=progress.total)
            while th.is_alive():
                th.join(0.25)
                bar.update(task, completed=progress.done, description=progress.line())
            bar.update(task, completed=progress.done, description=progress.line())
    else:
        last = 0.0
        while th.is_alive():
            th.join(0.25)
            if time.monotonic() - last >= 2.0:
                last = time.monotonic()
                print(progress.line(), file=sys.stderr, flush=True)
        print(progress.line(), file=sys.stderr, flush=True)
    if "error" in result:
        raise result["error"]
    return result["value"]


def _print_summary(summary: dict[str, Any], lines: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    from sim.caller.line_noise import describe_line

    line = describe_line(summary["meta"].get("line") or {})
    t = Table(
        title=f"{summary['calls']} calls: {summary['ok']} ok, {summary['failed']} failed "
        f"(line: {line})"
    )
    for col in ("metric (ms)", "n", "p50", "p95", "p99", "max"):
        t.add_column(col, justify="left" if col.startswith("metric") else "right")
    for row in lines:
        t.add_row(*row)
    con = Console()
    con.print(t)
    con.print(
        f"concurrency reached {summary['concurrency_max']}; clears {summary['clears']}; "
        f"stale frames after clear {summary['stale_frames']} (in "
        f"{summary['calls_with_stale_frames']} calls); replies missed "
        f"{summary['replies_missed']}; barge-ins {summary['bargeins']} "
        f"(unanswered {summary['bargeins_unanswered']}); frames held back by the server's "
        f"TCP backpressure {summary['frames_backpressured']}; generator CPU "
        f"{summary['meta'].get('generator_cpu_pct')}% of one core; other load on its cores "
        f"{summary['meta'].get('foreign_load_pct', '-')}%; longest GC pause "
        f"{(summary['meta'].get('generator_gc') or {}).get('pause_max_ms', '-')} ms"
    )
    errors = summary.get("protocol_errors_by_kind") or {}
    con.print(
        f"protocol errors (messages Twilio would drop) {summary.get('protocol_errors', 0)}"
        + (
            f" in {summary['calls_with_protocol_errors']} calls: "
            + ", ".join(f"{k} x{n}" for k, n in errors.items())
            if errors
            else ""
        )
    )
    server = summary["meta"].get("server_cpu_pct")
    if server:
        con.print(f"server CPU % of one core: {server}")
    for reason, n in summary["failures_by_reason"].items():
        con.print(f"  failed x{n}: {reason}")


def health_warnings(meta: dict[str, Any]) -> list[str]:
    """Why this run's figures may not be the server's: a shared generator core, a full server."""
    out = []
    foreign = meta.get("foreign_load_pct")
    if foreign is not None and foreign > FOREIGN_LOAD_WARN_PCT:
        out.append(
            f"other processes used {foreign}% of a core on the generator's cores "
            f"{meta.get('generator_cores')}: send lateness and latencies include their "
            "interference; rerun on idle cores (taskset -c N)"
        )
    server = meta.get("server_cpu_pct") or {}
    if server.get("p90") is not None and server["p90"] > SERVER_BUSY_WARN_PCT:
        out.append(
            f"the server used {server['p90']}% of a core (p90 of 0.5 s samples): it is "
            "saturated; the figures measure its overload"
        )
    busy = meta.get("server_cores_busy_pct") or {}
    if server.get("mean") is not None and busy.get("mean") is not None:
        extra = busy["mean"] - server["mean"]
        if extra > FOREIGN_LOAD_WARN_PCT:
            out.append(
                f"other processes used {extra:.0f}% of a core on the server's cores "
                f"{meta.get('server_cores')}: the server was not alone"
            )
    return out


def run(args: argparse.Namespace) -> int:
    """Run the load test; see the epilog for exit codes."""
    from sim.loadtest.report import check_slos, parse_slo, summarize, summary_lines, write_report
    from sim.loadtest.runner import LoadConfig, now_stamp, run_load
    from sim.loadtest.scenario import ScenarioError, load_scenario

    try:
        scenario = load_scenario(args.scenario).with_line(
            args.line_noise_dbfs,
            args.line_noise_color,
            args.echo_db,
            args.playout_delay_ms,
            args.stream_connect_ms,
        )
        slos = {**scenario.slo, **dict(parse_slo(s) for s in args.slo)}
        if args.calls < 1 or args.concurrency < 1 or args.workers < 1:
            raise ValueError("--calls, --concurrency and --workers must be at least 1")
    except (ValueError, ScenarioError) as e:
        print(f"voicebot loadtest: {e}", file=sys.stderr)
        return EXIT_USAGE
    cfg = LoadConfig(
        url=args.url, scenario=scenario, calls=args.calls, concurrency=args.concurrency,
        ramp_secs=args.ramp, auth_token=args.auth_token, persona=args.persona,
        workers=args.workers, seed=args.seed, use_uvloop=args.uvloop,
        server_pid=args.server_pid, tune_gc=args.tune_gc, nice=args.nice,
    )  # fmt: skip
    progress = Progress(args.calls)
    started = now_stamp()
    try:
        outcome = _drive(lambda: run_load(cfg, progress), progress)
    except Exception as e:
        print(f"voicebot loadtest: the run failed: {e}", file=sys.stderr)
        return EXIT_ERROR
    meta = {
        "url": args.url, "scenario": scenario.name, "calls": args.calls,
        "concurrency": args.concurrency, "workers": outcome.workers, "started": started,
        "wall_secs": round(outcome.wall_secs, 2),
        "generator_cpu_pct": round(100 * outcome.cpu_secs / outcome.wall_secs, 1)
        if outcome.wall_secs else None,
        "generator_gc": outcome.gc, "generator_nice": args.nice,
        "line": scenario.line_description(), **outcome.host,
    }  # fmt: skip
    summary = summarize(outcome.records, outcome.lateness, outcome.concurrency, meta)
    missed = check_slos(summary, slos)
    summary["slos"] = slos
    summary["slo_missed"] = missed
    _print_summary(summary, summary_lines(summary))
    late = summary["metrics"]["send_lateness_ms"]["p99"]
    if late is not None and late > LATENESS_WARN_MS:
        print(
            f"WARNING: the load generator itself was late (send lateness p99 {late} ms > "
            f"{LATENESS_WARN_MS} ms): latencies are inflated; add --workers or lower --concurrency",
            file=sys.stderr,
        )
    for w in health_warnings(summary["meta"]):
        print(f"WARNING: {w}", file=sys.stderr)
    if args.report:
        jp, hp = write_report(args.report, summary, outcome.records, outcome.concurrency)
        print(f"report: {jp} {hp}")
    for m in missed:
        print(f"SLO missed: {m}", file=sys.stderr)
    return EXIT_SLO if missed else EXIT_OK
