"""A throwaway PostgreSQL server for tests and benchmarks, from the system's own binaries.

``TempPostgres`` runs ``initdb`` into a fresh temporary folder and ``pg_ctl`` on a free
loopback port (no system service, no shared state; the folder is removed at ``stop``).
``postgres_binaries()`` finds ``initdb``/``pg_ctl`` on ``PATH`` or under
``/usr/lib/postgresql/*/bin`` (Debian's layout); ``None`` when PostgreSQL is not installed.
PostgreSQL refuses to run as root: as root, the server runs as the ``postgres`` user (created
by Debian's package) through ``runuser``. ``stop_server``/``start_server`` stop and restart
the same cluster on the same port: a database outage for the records tests.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from sim.ports import free_port

START_TIMEOUT_SECS = 30


def postgres_binaries() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``, or None when PostgreSQL is not installed."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / "pg_ctl").exists() and (folder / "initdb").exists():
            return folder
    return None


def unavailable_reason() -> str | None:
    """Why a ``TempPostgres`` cannot run here, or None when it can."""
    if postgres_binaries() is None:
        return (
            "PostgreSQL is not installed (no initdb/pg_ctl on PATH or in "
            "/usr/lib/postgresql/*/bin); install it, e.g. apt-get install -y postgresql"
        )
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            return "running as root and runuser is missing (PostgreSQL refuses to run as root)"
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the server as"
    return None


class TempPostgres:
    """A PostgreSQL cluster in a temporary folder, on a free loopback port (module docstring)."""

    def __init__(self) -> None:
        bindir = postgres_binaries()
        if bindir is None:
            raise RuntimeError(unavailable_reason() or "PostgreSQL is not installed")
        self._bin = bindir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="voicebot-pg-"))
        self.data = self.root / "data"
        self._as_root = os.geteuid() == 0

    @property
    def url(self) -> str:
        """The ``postgresql://`` URL of its ``postgres`` database (trust auth on loopback)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        cmd = [str(self._bin / args[0]), *args[1:]]
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=START_TIMEOUT_SECS)
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args[:2])} failed (exit {done.returncode}): "
                f"{(done.stderr or done.stdout).strip()[-500:]}"
            )

    def start(self) -> str:
        """``initdb`` and start the server; its URL."""
        if self._as_root:
            shutil.chown(self.root, "postgres")
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
            "--no-sync",
        )  # fmt: skip
        self.start_server()
        return self.url

    def start_server(self) -> None:
        """Start (or restart) the cluster on its port."""
        opts = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root}"
            " -c fsync=off -c full_page_writes=off"  # a crash (immediate stop) keeps commits
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.root / "log"), "-w",
            "-t", str(START_TIMEOUT_SECS), "start",
        )  # fmt: skip

    def create_database(self, name: str) -> str:
        """Create an empty database; its URL."""
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return self.url.rsplit("/", 1)[0] + f"/{name}"

    def stop_server(self) -> None:
        """Stop the server at once (``-m immediate``: connections are cut as in a crash)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def stop(self) -> None:
        """Stop the server and remove its folder."""
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.stop_server()
        shutil.rmtree(self.root, ignore_errors=True)
