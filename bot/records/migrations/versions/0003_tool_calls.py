"""Create tool_calls: each persona HTTP tool call of a call (name, outcome, latency, sizes).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the table and its index."""
    op.create_table(
        "tool_calls",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "call_id",
            sa.Integer,
            sa.ForeignKey("calls.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("tool", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("at_secs", sa.Float, nullable=False),
        sa.Column("latency_secs", sa.Float, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("http_status", sa.Integer),
        sa.Column("args_bytes", sa.Integer, nullable=False),
        sa.Column("result_bytes", sa.Integer, nullable=False),
    )
    op.create_index("ix_tool_calls_call_id_seq", "tool_calls", ["call_id", "seq"])


def downgrade() -> None:
    """Drop the table."""
    op.drop_table("tool_calls")
