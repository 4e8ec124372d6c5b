"""Create the calls and transcript_turns tables.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create both tables and their indexes."""
    op.create_table(
        "calls",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("call_sid", sa.String(64), nullable=False, unique=True),
        sa.Column("stream_sid", sa.String(64), nullable=False),
        sa.Column("persona", sa.String(128), nullable=False),
        sa.Column("caller", sa.String(64), nullable=False),
        sa.Column("called", sa.String(64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_secs", sa.Float, nullable=False),
        sa.Column("end_reason", sa.String(200), nullable=False),
        sa.Column("failed", sa.Boolean, nullable=False),
        sa.Column("setup_secs", sa.Float),
        sa.Column("first_audio_secs", sa.Float),
        sa.Column("response_p50_secs", sa.Float),
        sa.Column("response_max_secs", sa.Float),
        sa.Column("responses", sa.Integer, nullable=False),
        sa.Column("barge_ins", sa.Integer, nullable=False),
        sa.Column("handovers", sa.Integer, nullable=False),
        sa.Column("reconnects", sa.Integer, nullable=False),
        sa.Column("prompt_tokens", sa.Integer),
        sa.Column("response_tokens", sa.Integer),
        sa.Column("tokens", sa.JSON),
        sa.Column("cost_usd", sa.Float),
        sa.Column("bad_input", sa.JSON),
        sa.Column("live_api_close", sa.String(200)),
        sa.Column("transcript_kept", sa.Boolean, nullable=False),
    )
    op.create_index("ix_calls_started_at", "calls", ["started_at"])
    op.create_index("ix_calls_persona_started_at", "calls", ["persona", "started_at"])
    op.create_table(
        "transcript_turns",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "call_id",
            sa.Integer,
            sa.ForeignKey("calls.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("speaker", sa.String(8), nullable=False),
        sa.Column("at_secs", sa.Float, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("interrupted", sa.Boolean, nullable=False),
        sa.Column("heard_text", sa.Text),
        sa.Column("heard_secs", sa.Float),
    )
    op.create_index("ix_transcript_turns_call_id_seq", "transcript_turns", ["call_id", "seq"])


def downgrade() -> None:
    """Drop both tables."""
    op.drop_table("transcript_turns")
    op.drop_table("calls")
