"""Process settings: the only code that reads ``os.environ``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

DEFAULT_PERSONAS_DIR = Path("config/personas")


class SettingsError(ValueError):
    """An environment variable has a value the server cannot use."""


class Settings(BaseModel):
    """Everything the server takes from its environment.

    Attributes:
        gemini_api_key: Gemini API key; ``None`` means "use the embedded emulator".
        gemini_base_url: Live API base URL (an emulator's ``url``); ``None`` is Google's.
        gemini_ca_file: PEM file of the CA to trust for ``gemini_base_url`` only.
        twilio_account_sid: Account SID, used for REST hang-up and transfer.
        twilio_auth_token: Auth token: signs webhooks and the media upgrade.
        public_url: Base URL Twilio reaches us on; ``None`` means the request's own host.
        personas_dir: Folder of persona YAML files.
        max_calls: Calls admitted at once; more get a polite TwiML refusal.
        lag_guard_ms: New calls are refused while the event loop lags more than this (an
            overloaded process keeps its live calls whole); 0 turns the guard off.
        log_level: loguru level for the console.
        stall_probe: Time every event-loop callback and report the long ones in ``/stats``
            (``bot.stall_probe``; for benchmarks, it costs ~1 % of a core at 150 calls).
        time_scale: Multiplies the server's own timers (call limits, idle re-prompts, the
            audioStreamEnd silence, GoAway handover margins: ``ProcessResources.time_scale``),
            so tests and demos run long behaviours in seconds; audio stays real time. For
            tests and demos only: production runs at 1.0. It also scales the drain window
            and the session-quota back-off.
        gemini_max_sessions: The Gemini concurrent-session quota, if known: new callers over
            it get the busy TwiML (``bot.session_quota``; a limit is also learned from
            refusals).
        gemini_handover_reserve: Sessions kept free for live calls' connection handovers.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    gemini_api_key: SecretStr | None = None
    gemini_base_url: str | None = None
    gemini_ca_file: Path | None = None
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    public_url: str | None = None
    personas_dir: Path = DEFAULT_PERSONAS_DIR
    max_calls: int = Field(default=200, ge=1)
    lag_guard_ms: float = Field(default=25.0, ge=0)
    log_level: str = "INFO"
    stall_probe: bool = False
    time_scale: float = Field(default=1.0, gt=0)
    gemini_max_sessions: int | None = Field(default=None, ge=1)
    gemini_handover_reserve: int = Field(default=0, ge=0)

    @field_validator("public_url", "gemini_base_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"got {value!r}, expected an http:// or https:// URL with a host")
        return value.rstrip("/")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Read settings from the environment (``os.environ`` unless given).

        Raises:
            SettingsError: naming the variable, the value found and what is expected.
        """
        env = os.environ if environ is None else environ
        names = {
            "gemini_api_key": "GEMINI_API_KEY",
            "gemini_base_url": "GEMINI_BASE_URL",
            "gemini_ca_file": "GEMINI_CA_FILE",
            "twilio_account_sid": "TWILIO_ACCOUNT_SID",
            "twilio_auth_token": "TWILIO_AUTH_TOKEN",
            "public_url": "PUBLIC_URL",
            "personas_dir": "VOICEBOT_PERSONAS_DIR",
            "max_calls": "VOICEBOT_MAX_CALLS",
            "lag_guard_ms": "VOICEBOT_LAG_GUARD_MS",
            "log_level": "VOICEBOT_LOG_LEVEL",
            "stall_probe": "VOICEBOT_STALL_PROBE",
            "time_scale": "VOICEBOT_TIME_SCALE",
            "gemini_max_sessions": "VOICEBOT_GEMINI_MAX_SESSIONS",
            "gemini_handover_reserve": "VOICEBOT_GEMINI_HANDOVER_RESERVE",
        }
        values: dict[str, object] = {}
        for field, var in names.items():
            raw = env.get(var, "").strip()
            if raw:
                values[field] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(values)
        except ValueError as e:
            errors: list[dict[str, Any]] = list(getattr(e, "errors", lambda: [])())
            if errors:
                err = errors[0]
                field = str(err["loc"][0]) if err.get("loc") else "?"
                var = names.get(field, field)
                raise SettingsError(f"{var}: {err['msg']}") from e
            raise SettingsError(str(e)) from e

    @property
    def use_emulator(self) -> bool:
        """True when no Gemini key is set: the server runs the embedded emulator."""
        return self.gemini_api_key is None

    @property
    def signatures_required(self) -> bool:
        """True when Twilio signatures are checked (an auth token is set)."""
        return self.twilio_auth_token is not None


def stream_url(public_base: str, path: str = "/twilio/media") -> str:
    """The Media Stream URL for TwiML: ``http`` becomes ``ws``, ``https`` becomes ``wss``."""
    parts = urlsplit(public_base)
    scheme = "wss" if parts.scheme == "https" else "ws"
    base_path = parts.path.rstrip("/")
    return f"{scheme}://{parts.netloc}{base_path}{path}"
