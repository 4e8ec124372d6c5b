"""The live persona set, reloaded on SIGHUP and when a file in the folder changes.

A reload builds a whole new ``PersonaSet`` and swaps it in one assignment, so a call that
started with a persona keeps that (immutable) object. An edit that fails validation is refused:
the errors are logged and the previous set stays in service.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from loguru import logger

from bot.settings import process_environ
from pipelines.personas import PersonaConfigError, PersonaSet, load_personas

Snapshot = dict[str, tuple[int, int]]


def _snapshot(directory: Path) -> Snapshot:
    """``relative path -> (mtime_ns, size)`` of every file under ``directory`` (prompts too)."""
    out: Snapshot = {}
    try:
        for path in directory.rglob("*"):
            try:
                if path.is_file():
                    st = path.stat()
                    out[str(path.relative_to(directory))] = (st.st_mtime_ns, st.st_size)
            except OSError:
                continue  # removed while listing; the next poll sees the final state
    except OSError:
        pass
    return out


class PersonaStore:
    """Holds the current ``PersonaSet`` and replaces it when the files change.

    Args:
        directory: Folder of persona YAML files.
        poll_secs: How often the watch task compares file mtimes.

    Raises:
        PersonaConfigError: from the constructor when the initial load fails (the server
            must not start with bad personas).
    """

    def __init__(self, directory: Path, *, poll_secs: float = 1.0) -> None:
        self.directory = Path(directory)
        self.poll_secs = poll_secs
        self._snapshot = _snapshot(self.directory)
        self._current = load_personas(self.directory, process_environ())
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.reloads = 0
        self.refusals = 0

    @property
    def current(self) -> PersonaSet:
        """The set in service now; hold on to the ``Persona`` a call starts with."""
        return self._current

    def reload(self) -> bool:
        """Load the folder again; swap the set in if it is valid.

        Returns:
            True when the new set is in service; False when it was refused (errors logged,
            previous set kept).
        """
        self._snapshot = _snapshot(self.directory)
        try:
            new = load_personas(self.directory, process_environ())
        except PersonaConfigError as e:
            self.refusals += 1
            logger.error(
                f"persona reload refused, keeping the previous {len(self._current.personas)} "
                f"personas in service:\n{e}"
            )
            return False
        self._current = new
        self.reloads += 1
        logger.info(f"personas reloaded: {', '.join(sorted(new.personas))}")
        return True

    async def start(self) -> None:
        """Start the watch task (mtime polling plus SIGHUP wake-ups)."""
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.create_task(self._watch(), name="personas:watch")

    async def stop(self) -> None:
        """Stop the watch task and remove the SIGHUP handler, if installed."""
        if self._loop is not None:
            try:
                self._loop.remove_signal_handler(signal.SIGHUP)
            except (NotImplementedError, RuntimeError, ValueError):
                pass
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                if not task.cancelled():
                    raise
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise

    def install_sighup(self, loop: asyncio.AbstractEventLoop) -> None:
        """Reload on SIGHUP (via the watch task when running, else at once)."""
        self._loop = loop
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)

    def _on_sighup(self) -> None:
        logger.info("SIGHUP: reloading personas")
        if self._task is not None and not self._task.done():
            self._wake.set()
        else:
            self.reload()

    async def _watch(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_secs)
                forced = True
            except TimeoutError:
                forced = False
            self._wake.clear()
            try:
                snapshot = await asyncio.to_thread(_snapshot, self.directory)
                if forced or snapshot != self._snapshot:
                    await asyncio.to_thread(self.reload)
            except Exception:
                # Hot reload must outlive one bad read (a folder being replaced, say).
                logger.exception("persona watch: reload failed; the current personas stay")
