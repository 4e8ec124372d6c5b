"""The caller's line as settings: :class:`LineNoiseSpec` (YAML ``line_noise``, command flags).

Shared by ``voicebot call`` (``sim.caller.cmd``), the load tester's scenarios
(``sim.loadtest.scenario``) and the benchmark. Shorthands: ``off`` (or null) is digital silence,
a number sets only the level.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from sim.caller.line_noise import (
    DEFAULT_ECHO_DELAY_MS,
    DEFAULT_LINE_NOISE_COLOR,
    DEFAULT_LINE_NOISE_DBFS,
    LineNoise,
    parse_dbfs,
)


class LineError(ValueError):
    """A line setting out of range; the message says which and what is expected."""


class LineNoiseSpec(BaseModel):
    """``line_noise``: the caller's line (see :class:`sim.caller.line_noise.LineNoise`).

    ``line_noise: off`` is digital silence; ``line_noise: -50`` sets only the level.
    """

    model_config = ConfigDict(extra="forbid")
    dbfs: float | None = DEFAULT_LINE_NOISE_DBFS
    color: Literal["white", "pink"] = DEFAULT_LINE_NOISE_COLOR
    echo_db: float | None = None
    echo_delay_ms: float = DEFAULT_ECHO_DELAY_MS

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        if v is False or v is None or isinstance(v, str | int | float):
            return {"dbfs": _dbfs(v)}
        if isinstance(v, dict) and "dbfs" in v:
            return {**v, "dbfs": _dbfs(v["dbfs"])}
        return v

    @model_validator(mode="after")
    def _in_range(self) -> LineNoiseSpec:
        self.line()  # LineNoise checks the ranges and says what it expected
        return self

    def line(self) -> LineNoise:
        """The :class:`LineNoise` this spec describes."""
        return LineNoise(self.dbfs, self.color, self.echo_db, self.echo_delay_ms)


def _dbfs(v: Any) -> Any:
    """YAML 1.1 reads ``off`` as False; accept it, ``"off"`` and null as digital silence."""
    if v is False or v is None:
        return None
    if isinstance(v, str):
        return parse_dbfs(v)
    return v


def override_line(
    spec: LineNoiseSpec,
    delay_ms: float,
    dbfs: float | str | None = None,
    color: str | None = None,
    echo_db: float | str | None = None,
    playout_delay_ms: float | None = None,
) -> tuple[LineNoiseSpec, float]:
    """``spec`` and ``delay_ms`` with the given values replaced (None keeps; ``"off"``: none).

    Raises:
        LineError: a value out of range (the message says which and what is expected).
    """
    d = spec.model_dump()
    if dbfs is not None:
        d["dbfs"] = dbfs
    if color is not None:
        d["color"] = color
    if echo_db is not None:
        d["echo_db"] = None if echo_db == "off" else echo_db
    try:
        new = LineNoiseSpec.model_validate(d)
    except ValidationError as e:
        msg = "; ".join(str(err["msg"]).removeprefix("Value error, ") for err in e.errors())
        raise LineError(msg) from None
    delay = delay_ms if playout_delay_ms is None else playout_delay_ms
    if not 0 <= delay <= 1000:
        raise LineError(f"playout delay: got {delay:g} ms, expected 0 to 1000 ms (e.g. 60)")
    return new, float(delay)
