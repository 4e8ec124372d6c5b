"""Typed keys for the objects the aiohttp application shares with its handlers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from bot.calls import CallRegistry
    from bot.persona_store import PersonaStore
    from bot.post_call import PostCallSender
    from bot.records.writer import RecordWriter
    from bot.settings import Settings
    from bot.stream_forward import StreamForwarder
    from bot.twilio_security import Authenticator
    from bot.warm_sessions import WarmSessions
    from pipelines.audio.batched_vad import BatchedSileroVAD
    from pipelines.call.resources import ProcessResources
    from pipelines.call.setup_gate import SetupGate

SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
AUTH: web.AppKey[Authenticator] = web.AppKey("auth")
CALLS: web.AppKey[CallRegistry] = web.AppKey("calls")
PERSONAS: web.AppKey[PersonaStore] = web.AppKey("personas")
RESOURCES: web.AppKey[ProcessResources] = web.AppKey("resources")
# Owned by the app, shared by its calls: setups take turns; one batched Silero detector
# for local VAD.
SETUP_GATE: web.AppKey[SetupGate] = web.AppKey("setup_gate")
VAD_MODEL: web.AppKey[BatchedSileroVAD] = web.AppKey("vad_model")
# The call records writer (bot.records); absent when VOICEBOT_DATABASE_URL=off.
RECORDS: web.AppKey[RecordWriter] = web.AppKey("records")
# Personas' post-call webhooks (bot.post_call); always present, idle unless a persona has one.
POST_CALL: web.AppKey[PostCallSender] = web.AppKey("post_call")
# Live API sessions pre-opened at the voice webhook, by CallSid (bot.warm_sessions).
WARM_SESSIONS: web.AppKey[WarmSessions] = web.AppKey("warm_sessions")
# Relays streams whose call another process admitted (bot.stream_forward).
FORWARDER: web.AppKey[StreamForwarder] = web.AppKey("forwarder")
