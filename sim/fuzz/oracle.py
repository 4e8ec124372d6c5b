"""What counts as a crash while fuzzing: every way a traceback or an internal error can surface.

:class:`Oracle` listens, for as long as it is installed, on every channel an unhandled error
reaches in this process:

- loguru records at ERROR or above, and any record that carries an exception (a traceback);
- the event loop's exception handler (``Task exception was never retrieved``, errors in
  callbacks);
- the standard ``logging`` tree at ERROR or above, where aiohttp reports a handler that raised
  (``aiohttp.server``: "Error handling request", ``aiohttp.web``, ``aiohttp.websocket``).

Each is kept as a one-line :attr:`Oracle.problems` entry (with the exception type and the
innermost frame) so a failing run says what broke and where.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from types import TracebackType
from typing import Any

from loguru import logger

# Close codes that are answers, not failures: normal, going away, policy (protocol errors,
# refusals), message too big, try again later (capacity). 1011 (internal error) and 1006 (the
# connection dropped without a close) are crashes, except the one documented use of 1011: a
# started stream that sent no media for 10 s is dead (README, "Bad input on the media socket").
ALLOWED_CLOSE_CODES = frozenset({1000, 1001, 1008, 1009, 1013})
DEAD_STREAM = (1011, "no media from Twilio")


def close_is_an_answer(code: int | None, reason: str) -> bool:
    """Whether a close with ``code`` and ``reason`` is a documented answer (not a crash)."""
    if code in ALLOWED_CLOSE_CODES:
        return True
    return code == DEAD_STREAM[0] and reason.startswith(DEAD_STREAM[1])


def _where(exc: BaseException | None, tb: TracebackType | None = None) -> str:
    tb = tb or (exc.__traceback__ if exc else None)
    frames = traceback.extract_tb(tb) if tb else []
    last = f" at {frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}" if frames else ""
    return f"{type(exc).__name__}: {str(exc)[:120]}{last}" if exc else "no exception"


class _LoggingHandler(logging.Handler):
    def __init__(self, oracle: Oracle) -> None:
        super().__init__(logging.ERROR)
        self.oracle = oracle

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        tb = record.exc_info[2] if record.exc_info else None
        detail = f" ({_where(exc, tb)})" if exc else ""
        self.oracle.problems.append(f"logging {record.name}: {record.getMessage()[:200]}{detail}")


class Oracle:
    """Records unhandled errors while installed (``with Oracle() as oracle:`` inside a loop)."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self._sink: int | None = None
        self._handler = _LoggingHandler(self)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous_handler: Any = None

    def _loguru(self, message: Any) -> None:
        record = message.record
        exc = record["exception"]
        if record["level"].no >= logger.level("ERROR").no or exc is not None:
            detail = f" ({_where(exc.value, exc.traceback)})" if exc is not None else ""
            self.problems.append(
                f"log {record['level'].name} {record['name']}:{record['line']}: "
                f"{str(record['message'])[:200]}{detail}"
            )

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        self.problems.append(f"event loop: {context.get('message', '')[:200]} ({_where(exc)})")

    def __enter__(self) -> Oracle:
        self._sink = logger.add(self._loguru, level="WARNING", catch=False)
        logging.getLogger().addHandler(self._handler)
        self._loop = asyncio.get_running_loop()
        self._previous_handler = self._loop.get_exception_handler()
        self._loop.set_exception_handler(self._loop_error)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._sink is not None:
            logger.remove(self._sink)
        logging.getLogger().removeHandler(self._handler)
        if self._loop is not None:
            self._loop.set_exception_handler(self._previous_handler)

    def mark(self) -> int:
        """A position in :attr:`problems`, for :meth:`since`."""
        return len(self.problems)

    def since(self, mark: int) -> list[str]:
        """Problems recorded after ``mark``."""
        return self.problems[mark:]
