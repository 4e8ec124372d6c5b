"""Process settings: the only code that reads ``os.environ``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from bot.listen_address import DEFAULT_OPS_LISTEN, ListenAddress, parse_listen
from bot.peers import normalize_peer_url, parse_peer_networks
from bot.records.database import DEFAULT_DATABASE_URL, database_url

DEFAULT_PERSONAS_DIR = Path("config/personas")
DEFAULT_PRICING_FILE = Path("config/pricing.yaml")


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
        twilio_api_base_url: The Twilio REST API root every REST request goes to (hang-up,
            redirect, outbound calls; ``bot.twilio_rest``): Twilio's, or a stand-in such as
            ``sim.twilio_api``.
        public_url: Base URL Twilio reaches us on; ``None`` means the request's own host.
        personas_dir: Folder of persona YAML files.
        max_calls: Calls admitted at once; more get a polite TwiML refusal.
        lag_guard_ms: New calls are refused while the event loop lags more than this (an
            overloaded process keeps its live calls whole); 0 turns the guard off.
        log_level: loguru level for the console.
        log_format: ``text`` (dated lines for people) or ``json`` (one object per line for
            log collectors; ``bot.logs``).
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
        call_token_ttl_secs: How long the signed ``call_token`` a webhook issues stays valid
            for its stream's ``start`` (``bot.call_tokens``).
        ops_listen: Where the operations listener binds (``/stats``, health; ``bot.ops``):
            ``HOST:PORT``, ``PORT`` (on 127.0.0.1), ``0`` (ephemeral) or ``off``.
        ops_token: Bearer token the operations listener requires (required when it binds a
            non-loopback address).
        database_url: Where call records go (``bot.records``): a ``sqlite://`` or
            ``postgresql://`` URL (given its async driver), or ``off`` for none.
        records_retention_days: Records older than this are deleted (None: kept).
        record_numbers: How caller and called numbers are kept: ``last4``
            (``+1******0123``), ``full`` or ``none``.
        peer_url: This process's address as the other processes of the deployment reach it
            (``http://POD_IP:8080``), signed into each call's token so a stream landing on
            another process is relayed here (``bot.peers``); None: this process's own listen
            address when that is loopback, else no routing.
        peer_networks: Allow-list of networks a relay may dial (CIDRs, comma-separated); empty:
            any peer named in a signed token.
        busy_redirects: How many times a voice webhook this process cannot admit (full,
            draining, over its lag guard or its session share) is passed on with a TwiML
            ``<Redirect>`` to the same webhook URL, which the load balancer sends to another
            process, before a process answers the busy TwiML (``bot.twilio_routes``). None:
            0 for one process, N - 1 with ``--workers N`` (``bot.workers``).
        prewarm: Open each admitted call's Live API session at its webhook, before Twilio opens
            the stream (``bot.warm_sessions``; a persona's ``prewarm: false`` opts out).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    gemini_api_key: SecretStr | None = None
    gemini_base_url: str | None = None
    gemini_ca_file: Path | None = None
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_api_base_url: str = "https://api.twilio.com"
    public_url: str | None = None
    personas_dir: Path = DEFAULT_PERSONAS_DIR
    max_calls: int = Field(default=200, ge=1)
    lag_guard_ms: float = Field(default=25.0, ge=0)
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    stall_probe: bool = False
    time_scale: float = Field(default=1.0, gt=0)
    gemini_max_sessions: int | None = Field(default=None, ge=1)
    gemini_handover_reserve: int = Field(default=0, ge=0)
    call_token_ttl_secs: float = Field(default=300.0, gt=0)
    ops_listen: str = DEFAULT_OPS_LISTEN
    ops_token: SecretStr | None = None
    database_url: str = DEFAULT_DATABASE_URL
    records_retention_days: float | None = Field(default=90.0, gt=0)
    record_numbers: Literal["last4", "full", "none"] = "last4"
    pricing_file: Path = DEFAULT_PRICING_FILE  # model prices for the cost metric (bot.pricing)
    peer_url: str | None = None
    peer_networks: str = ""
    prewarm: bool = True
    busy_redirects: int | None = Field(default=None, ge=0, le=10)

    @field_validator("peer_url")
    @classmethod
    def _check_peer_url(cls, value: str | None) -> str | None:
        return normalize_peer_url(value) if value else None

    @field_validator("peer_networks")
    @classmethod
    def _check_peer_networks(cls, value: str) -> str:
        parse_peer_networks(value)  # ValueError names the entry and the form
        return value.strip()

    @field_validator("public_url", "gemini_base_url", "twilio_api_base_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"got {value!r}, expected an http:// or https:// URL with a host")
        return value.rstrip("/")

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        database_url(value)  # DatabaseError (a ValueError) names the value and the forms
        return value.strip()

    @field_validator("records_retention_days", mode="before")
    @classmethod
    def _retention_off(cls, value: object) -> object:
        return None if isinstance(value, str) and value.strip().lower() in ("off", "0") else value

    @property
    def records_url(self) -> str | None:
        """The records database URL with its async driver; None when records are off."""
        return database_url(self.database_url)

    @field_validator("ops_listen")
    @classmethod
    def _check_ops_listen(cls, value: str) -> str:
        parse_listen(value)  # ValueError names the value and the accepted forms
        return value.strip()

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
            "twilio_api_base_url": "TWILIO_API_BASE_URL",
            "public_url": "PUBLIC_URL",
            "personas_dir": "VOICEBOT_PERSONAS_DIR",
            "max_calls": "VOICEBOT_MAX_CALLS",
            "lag_guard_ms": "VOICEBOT_LAG_GUARD_MS",
            "log_level": "VOICEBOT_LOG_LEVEL",
            "log_format": "VOICEBOT_LOG_FORMAT",
            "stall_probe": "VOICEBOT_STALL_PROBE",
            "time_scale": "VOICEBOT_TIME_SCALE",
            "gemini_max_sessions": "VOICEBOT_GEMINI_MAX_SESSIONS",
            "gemini_handover_reserve": "VOICEBOT_GEMINI_HANDOVER_RESERVE",
            "call_token_ttl_secs": "VOICEBOT_CALL_TOKEN_TTL_SECS",
            "ops_listen": "VOICEBOT_OPS_PORT",
            "ops_token": "VOICEBOT_OPS_TOKEN",
            "database_url": "VOICEBOT_DATABASE_URL",
            "records_retention_days": "VOICEBOT_RECORDS_RETENTION_DAYS",
            "record_numbers": "VOICEBOT_RECORD_NUMBERS",
            "pricing_file": "VOICEBOT_PRICING_FILE",
            "peer_url": "VOICEBOT_PEER_URL",
            "peer_networks": "VOICEBOT_PEER_NETWORKS",
            "prewarm": "VOICEBOT_PREWARM",
            "busy_redirects": "VOICEBOT_BUSY_REDIRECTS",
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
    def ops_address(self) -> ListenAddress | None:
        """Where the operations listener binds; None when ``VOICEBOT_OPS_PORT=off``."""
        return parse_listen(self.ops_listen)

    @property
    def signatures_required(self) -> bool:
        """True when Twilio signatures are checked (an auth token is set)."""
        return self.twilio_auth_token is not None


def process_environ() -> Mapping[str, str]:
    """The process environment, for the persona checks that a variable they name is set."""
    return os.environ


def env_value(name: str) -> str | None:
    """An environment variable named by configuration (a persona's webhook ``secret_env``)."""
    return os.environ.get(name) or None


def stream_url(public_base: str, path: str = "/twilio/media") -> str:
    """The Media Stream URL for TwiML: ``http`` becomes ``ws``, ``https`` becomes ``wss``."""
    parts = urlsplit(public_base)
    scheme = "wss" if parts.scheme == "https" else "ws"
    base_path = parts.path.rstrip("/")
    return f"{scheme}://{parts.netloc}{base_path}{path}"
