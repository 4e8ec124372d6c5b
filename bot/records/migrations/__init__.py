"""Alembic migrations of the records schema (``bot.records.tables``), run at start."""
