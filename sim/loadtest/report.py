"""Load-test figures: summary, SLO checks, report.json and a self-contained report.html.

SLO names (``--slo NAME=VALUE``):

Time to greeting as the caller feels it is ``setup_audio_ms``: from the incoming-call webhook
(Twilio answers the call with the TwiML it fetches) to the first bot audio heard; it includes
Twilio's stream connect (``CallPlan.stream_connect_secs``) and the Live API setup, which the
server's pre-warming overlaps (``bot.warm_sessions``). ``greeting_ms`` starts at ``start``.

- ``p50_/p95_/p99_/max_`` + one of ``setup_ms``, ``setup_audio_ms``, ``greeting_ms``,
  ``response_ms``, ``bargein_clear_ms``, ``bargein_silence_ms``, ``gap_ms``, ``interarrival_ms``
  (per-call p99 inter-arrival), ``send_lateness_ms`` (the generator's own): the percentile must be
  at most VALUE; a metric with no samples misses its SLO.
- ``p50_/p95_/p99_/max_dead_air_secs``: each call's longest silence the caller did not cause
  (seconds; :mod:`sim.caller.dead_air`), over calls: ``max_dead_air_secs=2`` fails the run when
  any caller sat through more than 2 s of dead air.
- ``max_failed_pct``, ``max_missed_reply_pct``, ``max_unanswered_bargein_pct``: percentages.
- ``max_stale_frames``: total stale frames after ``clear`` over all calls.
- ``max_protocol_errors``: total messages from the server that Twilio would have dropped
  (:mod:`sim.caller.twilio_checks`), all kinds, over all calls.

``meta.line`` states the line the calls were on (noise level and colour, echo, playout delay).
"""

from __future__ import annotations

import html
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

from sim.caller.frame_ticker import LatenessHistogram
from sim.caller.line_noise import describe_line
from sim.caller.result import percentile

METRICS = {  # summary name -> (record field, flattened list?)
    "setup_ms": ("setup_ms", False),
    "setup_audio_ms": ("setup_to_audio_ms", False),
    "greeting_ms": ("greeting_ms", False),
    "response_ms": ("response_latencies_ms", True),
    "bargein_clear_ms": ("bargein_to_clear_ms", True),
    "bargein_silence_ms": ("bargein_to_silence_ms", True),
    "gap_ms": ("gaps_ms", True),
    "interarrival_ms": ("interarrival_p99_ms", False),
    "dead_air_secs": ("dead_air_secs", False),
}
LABELS = {
    "setup_ms": "call setup (webhook -> start)",
    "setup_audio_ms": "time to greeting as heard (answer/webhook -> first bot audio heard)",
    "greeting_ms": "greeting after stream start (start -> first bot audio heard)",
    "response_ms": "response latency",
    "bargein_clear_ms": "barge-in -> clear",
    "bargein_silence_ms": "barge-in -> silence",
    "gap_ms": "bot-audio gaps (underruns)",
    "interarrival_ms": "bot frame inter-arrival p99 per call",
    "dead_air_secs": "longest dead air per call (s)",
    "send_lateness_ms": "generator send lateness",
}
RATIO_SLOS = ("max_failed_pct", "max_missed_reply_pct", "max_unanswered_bargein_pct")
TOTAL_SLOS = {"max_stale_frames": "stale_frames", "max_protocol_errors": "protocol_errors"}


def values(records: list[dict[str, Any]], name: str) -> list[float]:
    """All samples of a summary metric across ``records``."""
    key, flat = METRICS[name]
    out: list[float] = []
    for r in records:
        v = r.get(key)
        if flat:
            out.extend(v or [])
        elif v is not None:
            out.append(v)
    return out


def _stats(vs: list[float]) -> dict[str, float | int | None]:
    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 2)

    return {
        "count": len(vs),
        "p50": r(percentile(vs, 50)),
        "p95": r(percentile(vs, 95)),
        "p99": r(percentile(vs, 99)),
        "max": r(max(vs)) if vs else None,
    }


def summarize(
    records: list[dict[str, Any]],
    lateness: LatenessHistogram,
    concurrency: list[tuple[float, int]],
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The run's headline figures, computed from the calls' own records."""
    n = len(records)
    failed = [r for r in records if not r["ok"]]
    lat = lateness.summary()
    metrics: dict[str, Any] = {name: _stats(values(records, name)) for name in METRICS}
    metrics["send_lateness_ms"] = {
        "count": lat["sends"], "p50": lat["p50_ms"], "p95": lateness.percentile(95),
        "p99": lat["p99_ms"], "max": lat["max_ms"],
    }  # fmt: skip
    turns = sum(len(r["response_latencies_ms"]) + r["replies_missed"] for r in records)
    bargeins = sum(r["bargeins"] for r in records)
    errors: Counter[str] = Counter()
    for r in records:
        errors.update(r.get("protocol_errors") or {})
    return {
        "meta": meta or {},
        "calls": n,
        "ok": n - len(failed),
        "failed": len(failed),
        "failed_pct": round(100 * len(failed) / n, 2) if n else 0.0,
        "failures_by_reason": dict(Counter(r["failure"] for r in failed).most_common()),
        "end_reasons": dict(Counter(r["end_reason"].split(";")[0] for r in records).most_common()),
        "concurrency_max": max((c for _, c in concurrency), default=0),
        "metrics": metrics,
        "replies_missed": sum(r["replies_missed"] for r in records),
        "missed_reply_pct": round(100 * sum(r["replies_missed"] for r in records) / turns, 2)
        if turns
        else 0.0,
        "talkovers": sum(r["talkovers"] for r in records),
        "bargeins": bargeins,
        "bargeins_unanswered": sum(r["bargeins_unanswered"] for r in records),
        "unanswered_bargein_pct": round(
            100 * sum(r["bargeins_unanswered"] for r in records) / bargeins, 2
        )
        if bargeins
        else 0.0,
        "clears": sum(r["clears"] for r in records),
        "stale_frames": sum(r["stale_frames"] for r in records),
        "frames_backpressured": sum(r.get("frames_backpressured", 0) for r in records),
        "calls_with_stale_frames": sum(1 for r in records if r["stale_frames"]),
        "protocol_errors": sum(errors.values()),
        "protocol_errors_by_kind": dict(errors.most_common()),
        "calls_with_protocol_errors": sum(1 for r in records if r.get("protocol_errors")),
        "audio_received_secs": round(sum(r["audio_received_secs"] for r in records), 2),
    }


def parse_slo(text: str) -> tuple[str, float]:
    """Parse ``NAME=VALUE``.

    Raises:
        ValueError: unknown name or non-numeric value, with the valid names.
    """
    name, sep, raw = text.partition("=")
    name = name.strip()
    valid = slo_names()
    if not sep or name not in valid:
        raise ValueError(
            f"--slo {text!r}: expected NAME=VALUE with NAME one of: {', '.join(valid)}"
        )
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"--slo {text!r}: value {raw!r} is not a number") from None
    return name, value


def slo_names() -> list[str]:
    """Every accepted SLO name."""
    names = [
        f"{q}_{m}" for m in [*METRICS, "send_lateness_ms"] for q in ("p50", "p95", "p99", "max")
    ]
    return names + [*RATIO_SLOS, *TOTAL_SLOS]


def check_slos(summary: dict[str, Any], slos: dict[str, float]) -> list[str]:
    """Missed SLOs, one readable line each (empty when all are met)."""
    missed = []
    for name, limit in slos.items():
        if name in RATIO_SLOS:
            got = summary[name.removeprefix("max_")]
        elif name in TOTAL_SLOS:
            got = summary.get(TOTAL_SLOS[name], 0)
        else:
            q, _, metric = name.partition("_")
            got = summary["metrics"][metric][q]
        if got is None:
            missed.append(f"{name}: no samples (limit {limit:g})")
        elif got > limit:
            missed.append(f"{name}: {got:g} > {limit:g}")
    return missed


# -- inline SVG ------------------------------------------------------------------------------
W, H, PAD = 420, 200, 34


def _axes(title: str, xmax: float, ymax: float, xunit: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" class="chart">',
        f'<text x="{W / 2}" y="14" text-anchor="middle" class="t">{html.escape(title)}</text>',
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - 8}" y2="{H - PAD}" class="ax"/>',
        f'<line x1="{PAD}" y1="20" x2="{PAD}" y2="{H - PAD}" class="ax"/>',
        f'<text x="{PAD}" y="{H - PAD + 14}" class="l">0</text>',
        f'<text x="{W - 8}" y="{H - PAD + 14}" text-anchor="end" class="l">'
        f"{xmax:.4g} {xunit}</text>",
        f'<text x="{PAD - 4}" y="26" text-anchor="end" class="l">{ymax:.4g}</text>',
    ]


def _sx(x: float, xmax: float) -> float:
    return PAD + (W - 8 - PAD) * (x / xmax if xmax else 0)


def _sy(y: float, ymax: float) -> float:
    return H - PAD - (H - PAD - 20) * (y / ymax if ymax else 0)


def svg_histogram(vs: list[float], title: str, unit: str = "ms", bins: int = 30) -> str:
    """Histogram of ``vs``."""
    if not vs:
        return f'<p class="empty">{html.escape(title)}: no samples</p>'
    xmax = max(vs) * 1.05 or 1.0
    counts = [0] * bins
    for v in vs:
        counts[min(int(v / xmax * bins), bins - 1)] += 1
    ymax = max(counts)
    parts = _axes(title, xmax, ymax, unit)
    bw = (W - 8 - PAD) / bins
    for i, c in enumerate(counts):
        if c:
            y = _sy(c, ymax)
            parts.append(
                f'<rect x="{PAD + i * bw:.1f}" y="{y:.1f}" width="{bw - 1:.1f}" '
                f'height="{H - PAD - y:.1f}" class="bar"><title>{c}</title></rect>'
            )
    return "".join(parts) + "</svg>"


def svg_cdf(vs: list[float], title: str, unit: str = "ms") -> str:
    """Empirical CDF of ``vs`` with p50/p95/p99 markers."""
    if not vs:
        return f'<p class="empty">{html.escape(title)}: no samples</p>'
    s = sorted(vs)
    xmax = s[-1] * 1.05 or 1.0
    parts = _axes(title, xmax, 1.0, unit)
    pts = " ".join(f"{_sx(v, xmax):.1f},{_sy((i + 1) / len(s), 1):.1f}" for i, v in enumerate(s))
    parts.append(f'<polyline points="{pts}" class="line"/>')
    for q in (50, 95, 99):
        p = percentile(s, q) or 0.0
        x = _sx(p, xmax)
        parts.append(f'<line x1="{x:.1f}" y1="20" x2="{x:.1f}" y2="{H - PAD}" class="q"/>')
        parts.append(
            f'<text x="{x + 2:.1f}" y="{H - PAD - 4 - q / 4:.1f}" class="l">p{q} {p:.0f}</text>'
        )
    return "".join(parts) + "</svg>"


def svg_series(points: list[tuple[float, int]], title: str) -> str:
    """Step line of (seconds, value)."""
    if not points:
        return f'<p class="empty">{html.escape(title)}: no samples</p>'
    xmax = max(t for t, _ in points) or 1.0
    ymax = max(max(v for _, v in points), 1)
    parts = _axes(title, xmax, ymax, "s")
    pts = " ".join(f"{_sx(t, xmax):.1f},{_sy(v, ymax):.1f}" for t, v in points)
    return "".join(parts) + f'<polyline points="{pts}" class="line"/></svg>'


def svg_bars(counts: dict[str, int], title: str) -> str:
    """Horizontal bars, one per label."""
    if not counts:
        return f'<p class="empty">{html.escape(title)}: none</p>'
    h = 24 + 22 * len(counts)
    top = max(counts.values())
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W * 2}" height="{h}" class="chart">',
        f'<text x="4" y="14" class="t">{html.escape(title)}</text>',
    ]
    for i, (label, n) in enumerate(counts.items()):
        y = 22 + 22 * i
        w = (W - 20) * n / top
        parts.append(f'<rect x="4" y="{y}" width="{w:.1f}" height="16" class="bar"/>')
        parts.append(
            f'<text x="{w + 8:.1f}" y="{y + 12}" class="l">{n}  {html.escape(label)}</text>'
        )
    return "".join(parts) + "</svg>"


CSS = """body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}
.chart{margin:6px;background:#fafafa;border:1px solid #ddd}.t{font-size:12px;font-weight:bold}
.l{font-size:10px;fill:#555}.ax{stroke:#888}.bar{fill:#4a7fc1}.line{fill:none;stroke:#c14a4a;stroke-width:1.5}
.q{stroke:#999;stroke-dasharray:3 3}.empty{color:#888}.bad{color:#b00;font-weight:bold}"""


def _fmt(v: Any) -> str:
    return "-" if v is None else (f"{v:.1f}" if isinstance(v, float) else str(v))


def render_html(
    summary: dict[str, Any], records: list[dict[str, Any]], concurrency: list[Any]
) -> str:
    """The report page: summary table and inline SVG charts (no scripts, no network)."""
    rows = "".join(
        f"<tr><td>{html.escape(LABELS[k])}</td>"
        + "".join(f"<td>{_fmt(v[q])}</td>" for q in ("count", "p50", "p95", "p99", "max"))
        + "</tr>"
        for k, v in summary["metrics"].items()
    )
    charts = []
    for name in (
        "response_ms",
        "setup_audio_ms",
        "greeting_ms",
        "setup_ms",
        "bargein_clear_ms",
        "bargein_silence_ms",
        "gap_ms",
        "dead_air_secs",
    ):
        vs = values(records, name)
        unit = "s" if name.endswith("_secs") else "ms"
        charts.append(svg_histogram(vs, f"{LABELS[name]} (histogram)", unit))
        charts.append(svg_cdf(vs, f"{LABELS[name]} (CDF)", unit))
    meta = html.escape(json.dumps(summary["meta"]))
    line = html.escape(describe_line(summary["meta"].get("line") or {}))
    errors = summary.get("protocol_errors_by_kind") or {}
    kinds = html.escape(", ".join(f"{k} x{n}" for k, n in errors.items()) or "none")
    missed = summary.get("slo_missed") or []
    slo = "".join(f'<p class="bad">SLO missed: {html.escape(m)}</p>' for m in missed)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>voicebot load test</title>"
        f"<style>{CSS}</style></head><body><h1>voicebot load test</h1>"
        f"<p><b>line:</b> {line}</p><p>{meta}</p>{slo}"
        f"<p>calls {summary['calls']}, ok {summary['ok']}, failed {summary['failed']} "
        f"({summary['failed_pct']}%), concurrency reached {summary['concurrency_max']}, "
        f"clears {summary['clears']}, stale frames {summary['stale_frames']} "
        f"(in {summary['calls_with_stale_frames']} calls), replies missed "
        f"{summary['replies_missed']}, barge-ins unanswered {summary['bargeins_unanswered']}, "
        f"protocol errors (messages Twilio would drop) {summary.get('protocol_errors', 0)}: "
        f"{kinds}</p>"
        f"<table><tr><th>ms</th><th>n</th><th>p50</th><th>p95</th><th>p99</th><th>max</th></tr>"
        f"{rows}</table>"
        + svg_series([(t, n) for t, n in concurrency], "concurrent calls over time")
        + svg_bars(summary["failures_by_reason"], "failed calls by reason")
        + svg_bars(summary["end_reasons"], "how calls ended")
        + "<div>"
        + "".join(charts)
        + "</div></body></html>"
    )


def write_report(
    out_dir: str | Path,
    summary: dict[str, Any],
    records: list[dict[str, Any]],
    concurrency: list[Any],
) -> tuple[Path, Path]:
    """Write ``report.json`` (summary, concurrency, every call) and ``report.html``."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    jp, hp = d / "report.json", d / "report.html"
    doc = {"summary": summary, "concurrency": concurrency, "calls": records}
    jp.write_text(json.dumps(doc, indent=1, allow_nan=False, default=_json_default))
    hp.write_text(render_html(summary, records, concurrency))
    return jp, hp


def _json_default(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def summary_lines(summary: dict[str, Any]) -> list[list[str]]:
    """Rows (metric, n, p50, p95, p99, max) for the terminal table."""
    return [
        [LABELS[k], str(v["count"]), *(_fmt(v[q]) for q in ("p50", "p95", "p99", "max"))]
        for k, v in summary["metrics"].items()
    ]
