"""The records database: its URL, the async engine, and the migrations run at start.

``VOICEBOT_DATABASE_URL`` takes SQLAlchemy URLs; the plain forms are given their async driver:
``sqlite:///path`` -> ``sqlite+aiosqlite``, ``postgresql://`` / ``postgres://`` ->
``postgresql+asyncpg``. ``off`` keeps no records. SQLite's folder is created when missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

if TYPE_CHECKING:  # Alembic loads only to migrate (it costs ~0.2 s to import)
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///voicebot-calls.db"
OFF = "off"
# A locked SQLite file or an unreachable server fails a write this fast; the writer retries.
CONNECT_TIMEOUT_SECS = 2.0


class DatabaseError(ValueError):
    """The records database URL cannot be used."""


def database_url(raw: str) -> str | None:
    """``raw`` with its async driver (see the module docstring); None for ``off``.

    Raises:
        DatabaseError: naming the value and the accepted forms.
    """
    raw = raw.strip()
    if raw.lower() in (OFF, "none", ""):
        return None
    try:
        url = make_url(raw)
    except ArgumentError:
        raise DatabaseError(
            f"got {raw!r}, expected a URL such as "
            "sqlite:///var/voicebot-calls.db or postgresql://user:pass@host/db, or 'off'"
        ) from None
    backend = url.get_backend_name()
    if backend == "sqlite":
        url = url.set(drivername="sqlite+aiosqlite")
    elif backend in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+asyncpg")
    else:
        raise DatabaseError(f"got a {backend!r} URL, expected sqlite:// or postgresql://")
    return url.render_as_string(hide_password=False)


def _alembic_config(connection: Connection) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    from alembic import command

    command.upgrade(_alembic_config(connection), "head")


def _revision(connection: Connection) -> tuple[str | None, str | None]:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    current = MigrationContext.configure(connection).get_current_revision()
    head = ScriptDirectory.from_config(_alembic_config(connection)).get_current_head()
    return current, head


class Database:
    """The records database of one URL (already given its async driver by ``database_url``).

    Args:
        url: A ``sqlite+aiosqlite`` or ``postgresql+asyncpg`` URL.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": CONNECT_TIMEOUT_SECS}
        else:
            kwargs["connect_args"] = {"timeout": CONNECT_TIMEOUT_SECS}
            kwargs["pool_size"] = 2
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)

    @property
    def where(self) -> str:
        """The URL without its password (for logs)."""
        return make_url(self.url).render_as_string(hide_password=True)

    async def upgrade(self) -> None:
        """Bring the schema to the newest migration (idempotent)."""
        async with self.engine.begin() as conn:
            await conn.run_sync(_upgrade)

    async def revision(self) -> tuple[str | None, str | None]:
        """(the database's migration, the newest shipped)."""
        async with self.engine.connect() as conn:
            return await conn.run_sync(_revision)

    async def close(self) -> None:
        """Close the engine's connections."""
        await self.engine.dispose()
