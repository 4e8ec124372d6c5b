"""The persona's sections: ``greeting:``, ``session:``, ``tools:``, ``limits:``, ``watchdog:``...

One pydantic model per YAML section of a persona (``schema.Persona`` holds them). Field
validators raise ``ValueError("got …, expected …")`` so the loader can prefix file, line and
field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pipelines import gemini_models
from pipelines.personas.quoting import E164

DEFAULT_GREETING = "Greet the caller briefly and ask how you can help."


def http_url(value: str, *, example: str) -> str:
    """Check a field holding an http(s) URL with a host; ``example`` is shown in the error."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"got {value!r}, expected an http:// or https:// URL with a host, e.g. {example!r}"
        )
    return value


def env_var_name(value: str, info: ValidationInfo, *, example: str, holds: str, fix: str) -> str:
    """Check a field naming an environment variable (a secret is never written in YAML).

    The variable must be set in the server's environment when the loader was handed one
    (``info.context["environ"]``); with none (a file checked on its own) only the name is.

    Args:
        value: The field's value, the variable's NAME.
        info: Pydantic's validation info, carrying the loader's context.
        example: A name to show in the error.
        holds: What the variable must hold, for the error.
        fix: What to ``export NAME=`` in the fix.
    """
    if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", value, re.ASCII):
        raise ValueError(
            f"got {value!r}, expected the NAME of an environment variable (A-Z, 0-9, _), "
            f"e.g. {example!r}; the secret itself never goes in a persona file"
        )
    context = info.context if isinstance(info.context, Mapping) else {}
    environ = context.get("environ")  # the server's, handed in; None: not checked here
    if environ is not None and not str(environ.get(value, "")).strip():
        raise ValueError(
            f"got {value!r}, which is not set in the server's environment, expected it set to "
            f"{holds}; fix: export {value}={fix}"
        )
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _e164(value: str) -> str:
    if not E164.fullmatch(value):
        raise ValueError(
            f"got {value!r}, expected an E.164 number like '+15551230000' (a '+', the country "
            "code and the number, digits only; quote it in YAML)"
        )
    return value


class Greeting(_Strict):
    """How the call opens.

    Attributes:
        mode: ``say`` (these exact words), ``instruct`` (an instruction for the model's first
            turn) or ``wait`` (the caller speaks first).
        text: The words or the instruction; ``None`` for ``wait``.
    """

    mode: Literal["say", "instruct", "wait"] = "instruct"
    text: str | None = DEFAULT_GREETING

    @model_validator(mode="before")
    @classmethod
    def _no_default_text_when_waiting(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("mode") == "wait" and "text" not in data:
            return {**data, "text": None}
        return data

    @model_validator(mode="after")
    def _text_matches_mode(self) -> Greeting:
        if self.mode == "wait" and self.text:
            raise ValueError("got a text with mode 'wait', expected no text (the caller speaks)")
        if self.mode != "wait" and not (self.text and self.text.strip()):
            raise ValueError(f"got no text for mode {self.mode!r}, expected the greeting text")
        return self


class Thinking(_Strict):
    """Thinking: ``budget`` (tokens, 2.5 models) or ``level`` (3.x thinking models)."""

    budget: int | None = Field(default=None, ge=-1)
    level: str | None = None

    @field_validator("level")
    @classmethod
    def _level(cls, value: str | None) -> str | None:
        if value is None:
            return None
        upper = value.upper()
        if upper not in gemini_models.THINKING_LEVELS:
            levels = ", ".join(v.lower() for v in gemini_models.THINKING_LEVELS)
            raise ValueError(f"got {value!r}, expected one of {levels}")
        return upper

    @model_validator(mode="after")
    def _one_kind(self) -> Thinking:
        if self.budget is not None and self.level is not None:
            raise ValueError("got both budget and level, expected one of them")
        if self.budget is None and self.level is None:
            raise ValueError("got neither budget nor level, expected one of them")
        return self


class ContextCompression(_Strict):
    """Sliding-window context compression, triggered at ``trigger_tokens`` (None: ~80%)."""

    trigger_tokens: int | None = Field(default=None, ge=1000)


class ActivityDetection(_Strict):
    """Gemini's automatic activity detection (server-side VAD)."""

    disabled: bool = False
    start_sensitivity: Literal["low", "high"] | None = None
    end_sensitivity: Literal["low", "high"] | None = None
    prefix_padding_ms: int | None = Field(default=None, ge=0, le=5000)
    silence_duration_ms: int | None = Field(default=None, ge=0, le=10000)


class Session(_Strict):
    """Live API session features."""

    input_transcription: bool = True
    output_transcription: bool = True
    affective_dialog: bool = False
    proactive_audio: bool | None = None
    thinking: Thinking | None = None
    context_window_compression: ContextCompression | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    activity_detection: ActivityDetection = ActivityDetection()


class BargeIn(_Strict):
    """Local barge-in: Silero VAD and when caller speech may cut the bot off."""

    local_vad: bool = True
    confidence: float = Field(default=0.7, ge=0.0, le=1.0)
    start_secs: float = Field(default=0.2, ge=0.0, le=2.0)
    stop_secs: float = Field(default=0.8, ge=0.0, le=5.0)
    min_volume: float = Field(default=0.6, ge=0.0, le=1.0)
    min_speech_ms: int = Field(default=300, ge=0, le=5000)
    greeting_grace_ms: int = Field(default=1500, ge=0, le=30000)


class EndCallTool(_Strict):
    """Built-in ``end_call``: say goodbye, then hang up once it has played."""

    goodbye: str | None = "Say a short, friendly goodbye before ending the call."


class TransferTool(_Strict):
    """Built-in ``transfer_call``: TwiML ``<Dial>`` to ``to`` through the REST API."""

    to: str
    announcement: str | None = None

    @field_validator("to")
    @classmethod
    def _to(cls, value: str) -> str:
        return _e164(value)


class Tools(_Strict):
    """Built-in tools; absent or null means off."""

    end_call: EndCallTool | None = None
    transfer_call: TransferTool | None = None


class Limits(_Strict):
    """Call duration and caller-idle limits."""

    max_call_secs: float | None = Field(default=None, gt=0)
    max_call_warning_secs: float = Field(default=30.0, ge=0)
    # The three texts default to ``texts:`` (``pipelines.personas.texts``), by language.
    max_call_warning_text: str | None = None
    idle_timeout_secs: float | None = Field(default=None, gt=0)
    idle_reprompt_text: str | None = None
    idle_max_reprompts: int = Field(default=1, ge=0, le=10)
    idle_goodbye_text: str | None = None

    @model_validator(mode="after")
    def _warning_before_end(self) -> Limits:
        if self.max_call_secs is not None and self.max_call_warning_secs >= self.max_call_secs:
            raise ValueError(
                f"got max_call_warning_secs {self.max_call_warning_secs:g} >= max_call_secs "
                f"{self.max_call_secs:g}, expected the warning to come before the end"
            )
        return self


class Watchdog(_Strict):
    """When the model leaves the caller in silence (``pipelines.call.watchdog``).

    A silence the caller did not cause (no setup, no reply after the caller's turn, a reply
    that stops mid-answer) gets the holding clip after ``hold_after_secs`` (again after each
    further ``hold_after_secs``), a reconnect that resumes the session after
    ``reconnect_after_secs``, and after ``give_up_after_secs`` of such trouble in a call, the
    apology clip and a normal hang-up. Clips are WAV files (mono, 16-bit, 8/16/24 kHz) relative
    to the persona file; unset, the shipped clips in the persona's language (English unless
    ``language`` is Spanish).
    """

    hold_after_secs: float = Field(default=3.0, gt=0, le=30)
    reconnect_after_secs: float = Field(default=8.0, gt=0, le=120)
    give_up_after_secs: float = Field(default=15.0, gt=0, le=600)
    holding_clip: str | None = None
    apology_clip: str | None = None

    @model_validator(mode="after")
    def _in_order(self) -> Watchdog:
        if not self.hold_after_secs < self.reconnect_after_secs < self.give_up_after_secs:
            raise ValueError(
                f"got hold_after_secs {self.hold_after_secs:g}, reconnect_after_secs "
                f"{self.reconnect_after_secs:g}, give_up_after_secs {self.give_up_after_secs:g}; "
                "expected hold < reconnect < give_up (hold first, give up last)"
            )
        return self


class Records(_Strict):
    """What the server keeps of this persona's calls (``bot.records``)."""

    transcript: bool = True  # false: turns are timed and counted, their words not kept


class PostCallWebhook(_Strict):
    """Where a finished call's record is POSTed, signed (``bot.post_call``).

    Attributes:
        url: An ``http(s)://`` URL with a host.
        secret_env: The name of the environment variable holding the signing secret (never
            the secret itself: persona files are not secret); it must be set when the persona
            loads when the loader is handed the server's environment (pydantic's validation
            context ``{"environ": mapping}``; this library never reads the environment).
        timeout_secs: One attempt's time limit (connect, send, answer).
        max_attempts: Attempts in all, the first included (retries back off exponentially).
    """

    url: str
    secret_env: str
    timeout_secs: float = Field(default=5.0, gt=0, le=60)
    max_attempts: int = Field(default=5, ge=1, le=20)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return http_url(value, example="https://crm.example.com/hooks/calls")

    @field_validator("secret_env")
    @classmethod
    def _secret_env(cls, value: str, info: ValidationInfo) -> str:
        return env_var_name(
            value,
            info,
            example="CRM_WEBHOOK_SECRET",
            holds="the signing secret",
            fix="<a long random secret> (e.g. `openssl rand -hex 32`) before starting the server",
        )
