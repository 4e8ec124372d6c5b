"""What a call is given: Twilio's facts (``CallInfo``) and the server's side (``ProcessResources``).

``ProcessResources`` holds the objects the server shares with every call and its
implementations of the ports (``pipelines.ports``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import aiohttp

from pipelines.audio.batched_vad import BatchedSileroVAD
from pipelines.call.setup_gate import SetupGate
from pipelines.gemini.clients import GeminiClients
from pipelines.ports import (
    NO_METRICS,
    BridgeMetrics,
    CallMetricsFactory,
    CallReadyHook,
    CallRest,
    SessionFailedHook,
    TurnEndedHook,
)


@dataclass(frozen=True)
class CallInfo:
    """What Twilio told us about the call in the stream's ``start`` message."""

    call_sid: str
    stream_sid: str
    account_sid: str
    caller: str = ""
    called: str = ""
    custom: Mapping[str, str] = field(default_factory=dict)


@dataclass
class ProcessResources:
    """What the server hands every call: objects it owns, and its side of the ports.

    Attributes:
        gemini: The shared Gemini clients.
        setup_gate: Call setups take turns through it (one per server).
        vad_model: The batched Silero detector every call's local VAD shares (the server
            loads its model at start).
        metrics: Where bridge latency and audio seconds go.
        call_metrics: Makes each call's event metrics from its persona id and model (setup and
            response latency, barge-ins, handovers, tokens; ``bot.metrics``). None: only
            ``metrics`` is fed.
        rest: Twilio REST, when credentials are set: the hang-up at a normal call end (after
            the goodbye was played) and transfers. None: the stream is closed instead.
        call_ready: Called once per call when its Live API session is ready (or the setup
            failed): the server's garbage-collector policy freezes the new call there.
        session_failed: Called with (call SID, close code, reason) the moment a call's Live
            API session is refused or lost for good, before the call ends: the server's
            admission learns the session quota there.
        turn_ended: Called with (call SID, turn) as each turn of a call's transcript closes
            (a live view; the whole journal is ``CallPipeline.journal``).
        http: The server's shared HTTP client session: persona HTTP tools make their requests
            on it (``pipelines.tools``). None: such tools fail as ``misconfigured``.
        env_value: The value of an environment variable by name, or None (the server reads
            the environment; a tool header's ``{env: NAME}`` is filled from it per request).
        time_scale: Multiplies every call's own timers (the persona's limits and idle
            timeout, its audioStreamEnd silence, GoAway handover margins), for tests and
            demos; audio and the bounds on audio being played stay real time.
    """

    gemini: GeminiClients
    setup_gate: SetupGate = field(default_factory=SetupGate)
    vad_model: BatchedSileroVAD = field(default_factory=BatchedSileroVAD)
    metrics: BridgeMetrics = NO_METRICS
    call_metrics: CallMetricsFactory | None = None
    rest: CallRest | None = None
    call_ready: CallReadyHook | None = None
    session_failed: SessionFailedHook | None = None
    time_scale: float = 1.0
    turn_ended: TurnEndedHook | None = None
    http: aiohttp.ClientSession | None = None
    env_value: Callable[[str], str | None] = lambda _name: None
