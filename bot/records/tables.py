"""The records schema: one ``calls`` row per call, its ``transcript_turns`` rows in order.

The migrations (``migrations/versions``) create exactly this; a change here needs a new
migration (``tests/test_records_db.py`` checks that the migrated schema matches).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

calls = Table(
    "calls",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("call_sid", String(64), nullable=False, unique=True),
    Column("stream_sid", String(64), nullable=False),
    Column("persona", String(128), nullable=False),
    Column("caller", String(64), nullable=False),  # masked as configured
    Column("called", String(64), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True), nullable=False),
    Column("duration_secs", Float, nullable=False),
    Column("end_reason", String(200), nullable=False),
    Column("failed", Boolean, nullable=False),
    Column("setup_secs", Float),  # stream start -> Live API session ready
    Column("first_audio_secs", Float),  # stream start -> the bot first heard
    Column("response_p50_secs", Float),  # caller's turn end -> bot audio
    Column("response_max_secs", Float),
    Column("responses", Integer, nullable=False, default=0),
    Column("barge_ins", Integer, nullable=False, default=0),
    Column("handovers", Integer, nullable=False, default=0),
    Column("reconnects", Integer, nullable=False, default=0),
    Column("prompt_tokens", Integer),
    Column("response_tokens", Integer),
    Column("tokens", JSON),  # every kind of usageMetadata count, summed over the call
    Column("cost_usd", Float),  # the estimate of bot.metrics, when it has prices
    Column("bad_input", JSON),  # protocol errors by kind
    Column("live_api_close", String(200)),  # the Live API's refusal or loss, if any
    Column("transcript_kept", Boolean, nullable=False, default=True),
    Index("ix_calls_started_at", "started_at"),
    Index("ix_calls_persona_started_at", "persona", "started_at"),
)

turns = Table(
    "transcript_turns",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("call_id", Integer, ForeignKey("calls.id", ondelete="CASCADE"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("speaker", String(8), nullable=False),  # caller | bot
    Column("at_secs", Float, nullable=False),  # from the call's start
    Column("text", Text, nullable=False),
    Column("interrupted", Boolean, nullable=False, default=False),
    Column("heard_text", Text),  # bot turns: the words whose audio reached the phone
    Column("heard_secs", Float),  # bot turns: seconds of audio played
    Index("ix_transcript_turns_call_id_seq", "call_id", "seq"),
)

# Twilio's status callbacks of outbound calls (bot.outbound.status), one row per callback:
# insert-only, so any process may take any callback without a read-modify-write race; a call's
# timeline is its rows in order (migration 0002).
call_status_events = Table(
    "call_status_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("call_sid", String(64), nullable=False),
    Column("direction", String(16), nullable=False),  # outbound
    Column("persona", String(128)),
    Column("called", String(64), nullable=False),  # masked as configured
    Column("status", String(16), nullable=False),  # initiated, ringing, in-progress, completed…
    Column("answered_by", String(32)),  # human, machine_end_beep, … (AMD)
    Column("sequence", Integer),  # Twilio's SequenceNumber
    Column("duration_secs", Float),  # CallDuration, on the final callback
    Column("at", DateTime(timezone=True), nullable=False),
    Index("ix_call_status_events_call_sid", "call_sid"),
    Index("ix_call_status_events_at", "at"),
)

# Persona HTTP tool calls of a call (pipelines.tools), in order: what was called and how it went,
# sizes but never the arguments or the result (migration 0003).
tool_calls = Table(
    "tool_calls",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("call_id", Integer, ForeignKey("calls.id", ondelete="CASCADE"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("tool", String(64), nullable=False),
    Column("outcome", String(32), nullable=False),  # ok, invalid_arguments, timeout, …
    Column("at_secs", Float, nullable=False),  # from the call's start
    Column("latency_secs", Float, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("http_status", Integer),
    Column("args_bytes", Integer, nullable=False, default=0),
    Column("result_bytes", Integer, nullable=False, default=0),
    Index("ix_tool_calls_call_id_seq", "call_id", "seq"),
)
