"""Create call_status_events: the status callbacks of outbound calls, one row each.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the table and its indexes."""
    op.create_table(
        "call_status_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("call_sid", sa.String(64), nullable=False),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("persona", sa.String(128)),
        sa.Column("called", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("answered_by", sa.String(32)),
        sa.Column("sequence", sa.Integer),
        sa.Column("duration_secs", sa.Float),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_call_status_events_call_sid", "call_status_events", ["call_sid"])
    op.create_index("ix_call_status_events_at", "call_status_events", ["at"])


def downgrade() -> None:
    """Drop the table."""
    op.drop_table("call_status_events")
