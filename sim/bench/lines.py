"""The benchmark's phone lines and the two scenarios its callers follow on them.

A *line* is what the caller sends when it is not speaking: digital silence (µ-law 0xFF) or
line noise at a level (``--lines silence,-60,-50,-44``; colour, echo and playout delay from the
usual ``--line-noise-color``, ``--echo-db``, ``--playout-delay-ms``). Capacity that holds only
on digital silence is not a capacity: the issue's target is that silence is not more than 20 %
faster than −44 dBFS.

The scenarios, rendered into the report folder for each run:

* ``hold``: stay on the line without speaking while the bot talks (one long tone reply), then
  hang up after ``--hold`` seconds;
* ``speaking``: ``sim/loadtest/scenarios/talker.yaml``, a caller who barges into every reply
  (about 30 % of the time spent speaking), cut to ``--hold`` seconds and put on the line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sim.caller.line_noise import describe_line
from sim.caller.line_spec import LineError, LineNoiseSpec
from sim.loadtest.scenario import SCENARIOS_DIR, load_scenario

ALL_LINES = "silence,-60,-50,-44"
QUICK_LINES = "-44"
NOISY_REFERENCE = -44.0  # the line the targets are stated on
SPEAKING_SCENARIO = SCENARIOS_DIR / "talker.yaml"

HOLD_SCENARIO = """name: bench-hold
description: stay on the line without speaking while the bot talks, then hang up
hangup_after_secs: {limit}
line_noise: {line}
playout_delay_ms: {delay}
steps:
  - pause: {{secs: {hold}}}
  - hangup
"""


@dataclass(frozen=True)
class Line:
    """One line the benchmark measures on."""

    key: str  # "silence" or the level, e.g. "-44"
    spec: LineNoiseSpec
    playout_delay_ms: float

    @property
    def text(self) -> str:
        """Human-readable, e.g. ``pink noise -44 dBFS, no echo, playout delay 60 ms``."""
        return describe_line({**self.spec.model_dump(), "playout_delay_ms": self.playout_delay_ms})

    def to_dict(self) -> dict[str, Any]:
        """For ``bench.json``."""
        return {
            "key": self.key,
            **self.spec.model_dump(),
            "playout_delay_ms": self.playout_delay_ms,
            "text": self.text,
        }


def parse_lines(text: str, base: LineNoiseSpec, delay_ms: float) -> list[Line]:
    """``silence,-60,-50,-44`` -> lines on ``base``'s colour and echo, in the order given.

    Raises:
        ValueError: an entry that is neither ``silence``/``off`` nor a level in dBFS.
    """
    out: list[Line] = []
    for raw in text.split(","):
        item = raw.strip().lower().removesuffix("dbfs").strip()
        if not item:
            continue
        if item in ("silence", "off", "none"):
            key, dbfs = "silence", None
        else:
            try:
                dbfs = float(item)
            except ValueError:
                raise ValueError(
                    f"--lines: got {raw.strip()!r}, expected 'silence' or a level in dBFS "
                    f"such as -44 (e.g. --lines {ALL_LINES})"
                ) from None
            key = f"{dbfs:g}"
        try:
            spec = LineNoiseSpec.model_validate({**base.model_dump(), "dbfs": dbfs})
        except ValueError as e:  # pydantic's ValidationError is a ValueError
            raise LineError(f"--lines {raw.strip()!r}: {e}") from None
        if all(line.key != key for line in out):
            out.append(Line(key, spec, delay_ms))
    if not out:
        raise ValueError(f"--lines: no line given (e.g. --lines {ALL_LINES})")
    return out


def noisy_reference(lines: list[Line]) -> Line:
    """The line the speaking scenario, profile and burst run on: -44 dBFS, else the loudest."""
    for line in lines:
        if line.spec.dbfs == NOISY_REFERENCE:
            return line
    noisy = [line for line in lines if line.spec.dbfs is not None]
    return max(noisy, key=lambda line: float(line.spec.dbfs or 0.0)) if noisy else lines[0]


def write_hold(folder: Path, line: Line, hold: float) -> Path:
    """The hold scenario on ``line``, written to ``folder``."""
    path = folder / f"hold-{line.key}.yaml"
    path.write_text(
        HOLD_SCENARIO.format(
            hold=hold,
            limit=hold + 30,
            line=json.dumps(line.spec.model_dump()),
            delay=line.playout_delay_ms,
        )
    )
    return path


def write_speaking(folder: Path, line: Line, hold: float) -> Path:
    """``talker.yaml`` cut to ``hold`` seconds on ``line``, written to ``folder``.

    Its audio is named relative to ``sim/assets``, so the copy resolves it from anywhere.
    """
    data = yaml.safe_load(SPEAKING_SCENARIO.read_text())
    data.update(
        hangup_after_secs=hold,
        line_noise=line.spec.model_dump(),
        playout_delay_ms=line.playout_delay_ms,
    )
    path = folder / f"speaking-{line.key}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    load_scenario(path)  # fail now, not in the load generator
    return path
