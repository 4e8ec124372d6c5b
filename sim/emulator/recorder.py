"""Records every client message, audio replaced by its length, per session and to a file."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from loguru import logger

from pipelines.aio import cancel_and_wait
from sim.emulator.protocol import redact

FLUSH_SECS = 0.5


class Recorder:
    """Keeps client messages in memory per session and/or appends them as JSON lines.

    Each record is ``{"t": unix_secs, "session": id, "msg": <message, data -> "<N bytes>">}``.
    File writes are batched and done in a thread so the event loop never blocks on disk.

    Args:
        path: JSON-lines file to append to, or ``None``.
        in_memory: Keep records in ``sessions`` (session id -> records).
    """

    def __init__(self, path: Path | None, *, in_memory: bool) -> None:
        self.path = path
        self.in_memory = in_memory
        self.sessions: dict[str, list[dict[str, Any]]] = {}
        self._pending: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self._writing: asyncio.Future[None] | None = None

    @property
    def enabled(self) -> bool:
        """Whether anything is recorded."""
        return self.in_memory or self.path is not None

    def start(self) -> None:
        """Start the background file writer (if recording to a file)."""
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._task = asyncio.create_task(self._flush_loop(), name="emulator:recorder")

    async def stop(self) -> None:
        """Stop the writer and flush what is left, after a write the writer had begun.

        Cancelling the writer does not stop its thread: the batch it took was still being
        written when ``stop`` returned (a reader right after found no file, under load).
        """
        await cancel_and_wait(self._task)
        self._task = None
        writing, self._writing = self._writing, None
        if writing is not None:
            await self._finish(writing)
        await self._flush()

    def record(self, session_id: str, message: Any) -> None:
        """Record one client message."""
        if not self.enabled:
            return
        entry = {"t": round(time.time(), 4), "session": session_id, "msg": redact(message)}
        if self.in_memory:
            self.sessions.setdefault(session_id, []).append(entry)
        if self.path is not None:
            self._pending.append(json.dumps(entry, separators=(",", ":")))

    def caller_texts(self, session_id: str | None = None) -> list[str]:
        """Every realtime text input, in order, blank nudges (``text: " "``) left out.

        The caller's typed input (DTMF entries); on models that refuse mid-session
        ``clientContent``, the server's instructions too. ``session_id`` None: every session's,
        sessions in the order they started.
        """
        sessions = (
            self.sessions.values() if session_id is None else [self.sessions.get(session_id, [])]
        )
        out = []
        for records in sessions:
            for entry in records:
                msg = entry["msg"] if isinstance(entry["msg"], dict) else {}
                body = msg.get("realtime_input") or msg.get("realtimeInput") or {}
                text = body.get("text") if isinstance(body, dict) else None
                if isinstance(text, str) and text.strip():
                    out.append(text)
        return out

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECS)
            await self._flush()

    async def _flush(self) -> None:
        if not self._pending or self.path is None:
            return
        lines, self._pending = self._pending, []
        self._writing = asyncio.ensure_future(
            asyncio.to_thread(_append, self.path, "\n".join(lines) + "\n")
        )
        await self._finish(asyncio.shield(self._writing))  # if cancelled, ``stop`` waits for it
        self._writing = None

    async def _finish(self, write: asyncio.Future[None]) -> None:
        try:
            await write
        except OSError:
            logger.exception("emulator: cannot append the message record to {}", self.path)


def _append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(text)
