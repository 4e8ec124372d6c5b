"""The stage sampler's counts (``bot.stage_profile``, ``VOICEBOT_PROFILE``) as a CPU table.

The server writes cumulative counts per stage to a JSON file, with the stages' labels in order;
the benchmark reads it at the start and the end of a load level's steady window
(:func:`read_counts`), takes the difference (:func:`window`) and scales each stage's share of
the busy samples to the CPU measured over the same window (:func:`breakdown`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_counts(path: Path) -> dict[str, Any] | None:
    """The counts file, or None while there is none yet."""
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def window(before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, Any]:
    """The counts collected between two snapshots (all of ``after`` without ``before``)."""
    b = before or {"t": after["t"], "ticks": 0, "busy": 0, "leaf": {}, "incl": {}, "funcs": {}}

    def sub(key: str) -> dict[str, int]:
        out = {k: v - b[key].get(k, 0) for k, v in after[key].items()}
        return {k: v for k, v in out.items() if v > 0}

    return {
        "secs": round(after["t"] - b["t"], 2),
        "ticks": after["ticks"] - b["ticks"],
        "busy": after["busy"] - b["busy"],
        "stages": after.get("stages", []),
        "leaf": sub("leaf"),
        "incl": sub("incl"),
        "funcs": sub("funcs"),
    }


def breakdown(counts: dict[str, Any], cpu_pct: float, calls: int) -> dict[str, Any]:
    """Per-stage share of the busy samples, scaled to the CPU measured over the same window.

    Args:
        counts: a :func:`window` of the sampler's counts.
        cpu_pct: the server's CPU over the window, % of one core.
        calls: calls up during the window (for the per-call column).

    Returns:
        ``{"samples": n, "stages": [{stage, label, self_pct, incl_pct, cpu_pct,
        cpu_per_call_pct}, …] (heaviest first), "top": [[function, share %], …]}``.
    """
    busy = counts["busy"]
    labels = dict(counts.get("stages", []))
    stages: list[dict[str, Any]] = []
    for name in labels:
        n, inc = counts["leaf"].get(name, 0), counts["incl"].get(name, 0)
        if not n and not inc:
            continue
        share = n / busy if busy else 0.0
        stages.append(
            {
                "stage": name,
                "label": labels[name],
                "self_pct": round(100 * share, 1),
                "incl_pct": round(100 * inc / busy, 1) if busy else 0.0,
                "cpu_pct": round(cpu_pct * share, 2),
                "cpu_per_call_pct": round(cpu_pct * share / calls, 4) if calls else None,
            }
        )
    stages.sort(key=lambda r: -float(r["self_pct"]))
    top = sorted(counts["funcs"].items(), key=lambda kv: -kv[1])[:12]
    return {
        "samples": busy,
        "secs": counts["secs"],
        "cpu_pct": round(cpu_pct, 1),
        "calls": calls,
        "stages": stages,
        "top": [[f, round(100 * n / busy, 1)] for f, n in top] if busy else [],
    }
