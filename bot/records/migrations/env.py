"""Alembic environment: migrations run on the connection ``Database.upgrade`` hands in.

Run by ``bot.records.database.Database.upgrade`` (at server start, and by
``voicebot calls upgrade``) through the async engine's ``run_sync``; there is no alembic.ini.
Imported outside a migration (a test importing every module) it does nothing.
"""

from __future__ import annotations

from alembic import context

from bot.records.tables import metadata


def run_migrations() -> None:
    """Run the pending migrations on the handed-in connection."""
    connection = context.config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


if hasattr(context, "config"):  # loaded by Alembic
    run_migrations()
