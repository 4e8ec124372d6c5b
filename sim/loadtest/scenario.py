"""Load-test scenarios: what each simulated caller does, from YAML.

Example (``sim/loadtest/scenarios/bargein.yaml``)::

    name: bargein
    hangup_after_secs: 60
    line_noise: {dbfs: -45, color: pink}  # or: off; echo_db: 30 adds the bot's echo
    playout_delay_ms: 60                  # Twilio's buffering before audio is heard
    stream_connect_ms: 300                # Twilio's TwiML read -> stream start
    steps:
      - wait_for_greeting: {timeout_secs: 10}
      - say: caller_question.wav          # shorthand for {audio: caller_question.wav}
      - barge_in: {after_bot_audio_secs: 1.0, audio: caller_bargein.wav, probability: 0.5}
      - wait_for_reply: {timeout_secs: 10}
      - dtmf: {digits: "12#"}
      - pause: {secs: 0.5, max_secs: 1.5}  # uniform random think time
      - hangup: {}
    slo: {max_dead_air_secs: 3, p95_response_ms: 1500}  # optional: fail the run when missed

Every step takes ``probability`` (0-1, default 1): the chance that a given call performs it.
Audio paths resolve relative to the scenario file, then ``sim/assets``. Without ``line_noise``
the caller is on the default line (:data:`sim.caller.line_noise.DEFAULT_LINE_NOISE_DBFS`);
``voicebot loadtest --line-noise-dbfs`` overrides the scenario's. ``slo`` takes the names of
``voicebot loadtest --slo`` (:mod:`sim.loadtest.report`), e.g. ``max_dead_air_secs``: the
longest silence any caller sat through that it did not cause; ``--slo`` overrides them by name.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sim.caller.line_noise import (
    bank_for,
    speech_mix,
)
from sim.caller.line_spec import LineError, LineNoiseSpec, override_line
from sim.caller.plan import (
    DEFAULT_PLAYOUT_DELAY_SECS,
    DEFAULT_STREAM_CONNECT_SECS,
    CallPlan,
    Utterance,
    resolve_audio_path,
)
from sim.loadtest.report import slo_names

SCENARIOS_DIR = Path(__file__).parent / "scenarios"


MAX_STREAM_CONNECT_MS = 10_000  # a stream_connect_ms above this is a mistake, not a line


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the file and field."""


class _Loader(yaml.SafeLoader):
    """SafeLoader whose integers follow YAML 1.2: ``012`` stays the string "012"."""


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:int"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?(0|[1-9][0-9_]*)$"), list("-+0123456789")
)


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid")
    probability: float = Field(1.0, ge=0.0, le=1.0)


class WaitStep(_Step):
    """``wait_for_greeting`` / ``wait_for_reply``."""

    timeout_secs: float = Field(10.0, gt=0)
    quiet_secs: float = Field(0.5, ge=0)


class SayStep(_Step):
    """``say``: one utterance from a WAV file."""

    audio: str


class BargeInStep(_Step):
    """``barge_in``: talk over the bot after some of its reply has played."""

    after_bot_audio_secs: float = Field(1.0, ge=0)
    max_after_bot_audio_secs: float | None = Field(None, ge=0)
    audio: str = "caller_bargein.wav"
    timeout_secs: float = Field(10.0, gt=0)


class DtmfStep(_Step):
    """``dtmf``: key presses."""

    digits: str = Field(pattern=r"^[0-9*#A-Da-dw]+$")
    gap_secs: float = Field(0.1, ge=0)

    @field_validator("digits", mode="before")
    @classmethod
    def _digits_as_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) else v


class PauseStep(_Step):
    """``pause``: silence for ``secs`` (uniform in [secs, max_secs] when max_secs is set)."""

    secs: float = Field(ge=0)
    max_secs: float | None = Field(None, ge=0)


class HangupStep(_Step):
    """``hangup``: end the call here."""


class ScenarioStep(BaseModel):
    """Exactly one of the step kinds."""

    model_config = ConfigDict(extra="forbid")
    wait_for_greeting: WaitStep | None = None
    say: SayStep | None = None
    wait_for_reply: WaitStep | None = None
    barge_in: BargeInStep | None = None
    dtmf: DtmfStep | None = None
    pause: PauseStep | None = None
    hangup: HangupStep | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        if isinstance(v, str):  # "- hangup"
            v = {v: {}}
        if isinstance(v, dict):
            v = {k: ({} if val is None else val) for k, val in v.items()}
            if isinstance(v.get("say"), str):
                v["say"] = {"audio": v["say"]}
            if isinstance(v.get("pause"), int | float):
                v["pause"] = {"secs": v["pause"]}
            if isinstance(v.get("dtmf"), str | int):
                v["dtmf"] = {"digits": str(v["dtmf"])}
        return v

    @model_validator(mode="after")
    def _exactly_one(self) -> ScenarioStep:
        kinds = [k for k in type(self).model_fields if getattr(self, k) is not None]
        if len(kinds) != 1:
            names = ", ".join(type(self).model_fields)
            raise ValueError(f"a step needs exactly one of {names}; found {kinds or 'none'}")
        return self

    @property
    def kind(self) -> str:
        """The step's kind (its YAML key)."""
        return next(k for k in type(self).model_fields if getattr(self, k) is not None)


class Scenario(BaseModel):
    """A load-test scenario: the steps every simulated caller follows, and the caller's line."""

    model_config = ConfigDict(extra="forbid")
    name: str = "scenario"
    description: str = ""
    hangup_after_secs: float = Field(120.0, gt=0)
    silence_rms: float = Field(200.0, gt=0)
    line_noise: LineNoiseSpec = Field(default_factory=LineNoiseSpec)
    playout_delay_ms: float = Field(DEFAULT_PLAYOUT_DELAY_SECS * 1000, ge=0, le=1000)
    # Twilio's delay from reading the TwiML to the stream's start (sim.caller.plan).
    stream_connect_ms: float = Field(
        DEFAULT_STREAM_CONNECT_SECS * 1000, ge=0, le=MAX_STREAM_CONNECT_MS
    )
    steps: list[ScenarioStep] = Field(min_length=1)
    slo: dict[str, float] = Field(default_factory=dict)
    base_dir: Path | None = Field(None, exclude=True)
    source: str = Field("<scenario>", exclude=True)

    @field_validator("slo")
    @classmethod
    def _known_slos(cls, v: dict[str, float]) -> dict[str, float]:
        valid = slo_names()
        unknown = [k for k in v if k not in valid]
        if unknown:
            raise ValueError(
                f"unknown SLO name(s) {', '.join(unknown)}; expected names from: "
                f"{', '.join(valid)} (e.g. max_dead_air_secs: 2)"
            )
        return v

    def with_line(
        self,
        dbfs: float | str | None = None,
        color: str | None = None,
        echo_db: float | str | None = None,
        playout_delay_ms: float | None = None,
        stream_connect_ms: float | None = None,
    ) -> Scenario:
        """A copy on another line (command-line overrides); see :func:`override_line`.

        ``stream_connect_ms``: Twilio's TwiML read -> stream start (below 0: 0).

        Raises:
            ScenarioError: a value out of range (the message says which and what is expected).
        """
        try:
            spec, delay = override_line(
                self.line_noise, self.playout_delay_ms, dbfs, color, echo_db, playout_delay_ms
            )
        except LineError as e:
            raise ScenarioError(str(e)) from None
        update: dict[str, Any] = {"line_noise": spec, "playout_delay_ms": delay}
        if stream_connect_ms is not None:
            connect_ms = max(0.0, stream_connect_ms)
            if connect_ms > MAX_STREAM_CONNECT_MS:
                raise ScenarioError(
                    f"stream_connect_ms: expected 0-{MAX_STREAM_CONNECT_MS} ms, got {connect_ms:g}"
                )
            update["stream_connect_ms"] = connect_ms
        return self.model_copy(update=update)

    def line_description(self) -> dict[str, Any]:
        """The line every call of this scenario is on (for reports)."""
        return {**self.line_noise.line().to_dict(), "playout_delay_ms": self.playout_delay_ms}

    def prepare(self) -> None:
        """Load the audio and render the line's noise and speech mixes now, once per process.

        A load generator calls this before its clock matters: rendering in the first call
        would stall every call already sending.
        """
        line = self.line_noise.line()
        bank_for(line)
        for utt in self.utterances().values():
            speech_mix(utt, line.dbfs, line.color)

    def utterances(self) -> dict[str, Utterance]:
        """Every audio file the scenario uses, loaded and framed once.

        Raises:
            ScenarioError: an audio file is missing or unreadable.
        """
        out: dict[str, Utterance] = {}
        for i, st in enumerate(self.steps):
            spec = st.say or st.barge_in
            if spec is None or spec.audio in out:
                continue
            try:
                out[spec.audio] = Utterance.from_wav(resolve_audio_path(spec.audio, self.base_dir))
            except (OSError, ValueError) as e:
                raise ScenarioError(f"{self.source}: steps[{i}].{st.kind}.audio: {e}") from e
        return out

    def build_plan(self, rng: random.Random | None = None) -> CallPlan:
        """One call's plan: steps drawn with their probabilities and random ranges."""
        rng = rng or random.Random()
        utts = self.utterances()
        plan = CallPlan(
            hangup_after_secs=self.hangup_after_secs,
            silence_rms=self.silence_rms,
            line_noise=self.line_noise.line(),
            playout_delay_secs=self.playout_delay_ms / 1000,
            stream_connect_secs=self.stream_connect_ms / 1000,
        )
        for st in self.steps:
            spec = getattr(st, st.kind)
            if spec.probability < 1.0 and rng.random() >= spec.probability:
                continue
            if st.wait_for_greeting:
                plan.wait_for_greeting(
                    st.wait_for_greeting.timeout_secs, st.wait_for_greeting.quiet_secs
                )
            elif st.wait_for_reply:
                plan.wait_for_reply(st.wait_for_reply.timeout_secs, st.wait_for_reply.quiet_secs)
            elif st.say:
                plan.say(utts[st.say.audio])
            elif st.barge_in:
                b = st.barge_in
                after = b.after_bot_audio_secs
                if b.max_after_bot_audio_secs is not None:
                    after = rng.uniform(after, max(after, b.max_after_bot_audio_secs))
                plan.barge_in(after, utts[b.audio], b.timeout_secs)
            elif st.dtmf:
                plan.dtmf(st.dtmf.digits, st.dtmf.gap_secs)
            elif st.pause:
                p = st.pause
                plan.pause(rng.uniform(p.secs, max(p.secs, p.max_secs)) if p.max_secs else p.secs)
            elif st.hangup:
                plan.hangup()
                break
        return plan


def _format_errors(source: str, e: ValidationError) -> str:
    lines = []
    for err in e.errors():
        loc = ""
        for part in err["loc"]:
            loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
        got = err.get("input")
        lines.append(f"{source}: {loc or '(top level)'}: {err['msg']} (got {got!r})")
    return "\n".join(lines)


def parse_scenario(text: str, source: str = "<scenario>", base_dir: Path | None = None) -> Scenario:
    """Validate scenario YAML text.

    Raises:
        ScenarioError: bad YAML or a field that does not validate; one line per problem.
    """
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ScenarioError(f"{source}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ScenarioError(
            f"{source}: expected a mapping with 'steps', found {type(data).__name__}"
        )
    try:
        sc = Scenario.model_validate({**data, "base_dir": base_dir, "source": source})
    except ValidationError as e:
        raise ScenarioError(_format_errors(source, e)) from None
    if "name" not in data:
        sc.name = Path(source).stem
    sc.utterances()  # fail now on missing audio, not in the middle of a run
    return sc


def load_scenario(path: str | Path | None) -> Scenario:
    """Load a scenario file; a bare name such as ``bargein`` is one in ``sim/loadtest/scenarios``.

    Raises:
        ScenarioError: the file is missing or invalid.
    """
    if path is None:
        path = "default"
    p = Path(path)
    if not p.is_file() and (SCENARIOS_DIR / f"{p.name}.yaml").is_file():
        p = SCENARIOS_DIR / f"{p.name}.yaml"
    if not p.is_file():
        known = ", ".join(sorted(f.stem for f in SCENARIOS_DIR.glob("*.yaml")))
        raise ScenarioError(f"scenario {str(path)!r} not found (built-in scenarios: {known})")
    return parse_scenario(p.read_text(), str(p), p.parent)
