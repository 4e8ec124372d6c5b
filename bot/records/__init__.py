"""Call records and transcripts in a database (SQLite by default, PostgreSQL by URL).

- ``tables``: the schema (``calls``, ``transcript_turns``); ``migrations/``: its Alembic
  migrations, run at start (``database.Database.upgrade``).
- ``record``: the row a finished call becomes (``CallSummary``), numbers masked as configured.
- ``writer``: the non-blocking writer: a bounded in-process queue, one task that batches
  inserts and retries with backoff while the database is down, loss counted (``stats()``), and
  the retention sweep.
- ``reader``: the queries of ``voicebot calls list/show``.

Import the modules themselves (this package imports nothing, so ``bot.settings`` can use
``database.database_url`` without loading the writer).
"""
