"""Logging, configured once per process (loguru, Pipecat's logger, and the stdlib's).

Two forms on stderr, chosen by ``VOICEBOT_LOG_FORMAT`` / ``voicebot serve --log-format``:

- ``text`` (default), for people::

      2026-12-01T15:04:05.123Z INFO    [CA0123…] call ended: … (the CallSid inside a call)

- ``json``, for log collectors: one object per line, ``{"ts", "level", "message", "logger",
  "call_sid", "persona", "exception"}`` (the last three only when there is one). An exception
  is part of its line's object: ``exception`` holds the formatted traceback, never the local
  variables (``diagnose=False``: they may hold phone numbers or audio).

Times are UTC, ISO 8601 with milliseconds and ``Z``. The call's id and persona come from
``logger.contextualize(call_sid=…, persona=…)`` (``bot.media_stream``), never from the message.
No other bound value is written: a value bound for debugging cannot leak into the log this way.

Standard-library ``logging`` (aiohttp's server errors, asyncio's "exception was never
retrieved", Alembic) is routed into loguru, so those lines carry the date, the call id and, in
JSON, the same shape instead of Python's bare last-resort text.
"""

from __future__ import annotations

import inspect
import json
import logging
import sys
import traceback
from datetime import UTC
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal, TextIO

from loguru import logger

if TYPE_CHECKING:
    from loguru import Record

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
TIME_FORMAT = "YYYY-MM-DDTHH:mm:ss.SSS[Z]!UTC"
FORMAT = (
    "<green>{time:" + TIME_FORMAT + "}</green> <level>{level: <7}</level> "
    "{extra[call]}<level>{message}</level>"
)
_NOISY_PREFIXES = ("pipecat", "google", "websockets")
_JSON_KEY = "_json"


def json_line(record: Record) -> str:
    """One record as a JSON object (no newline): see the module docstring for the keys."""
    doc: dict[str, Any] = {
        "ts": _utc_iso(record),
        "level": record["level"].name,
        "message": record["message"],
        "logger": record["name"],
    }
    extra = record["extra"]
    for key in ("call_sid", "persona"):
        if extra.get(key):
            doc[key] = str(extra[key])
    if (exc := record["exception"]) is not None and exc.type is not None:
        doc["exception"] = "".join(traceback.format_exception(exc.type, exc.value, exc.traceback))
    return json.dumps(doc, ensure_ascii=False, default=str)


def _utc_iso(record: Record) -> str:
    t = record["time"].astimezone(UTC)  # loguru's time is aware (local): the same instant
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _json_format(record: Record) -> str:
    # A format function returns a template loguru fills from the record: the object goes in
    # through an extra field (braces in it are data, not fields), and the template has no
    # "{exception}", so loguru does not append a multi-line traceback after it.
    record["extra"][_JSON_KEY] = json_line(record)
    return "{extra[" + _JSON_KEY + "]}\n"


class _ToLoguru(logging.Handler):
    """Send standard-library log records to loguru, at their level, under their logger's name."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        # Skip logging's own frames: the line and function are the caller's.
        frame: FrameType | None = inspect.currentframe()
        depth = 0
        while frame is not None and (depth == 0 or frame.f_code.co_filename == logging.__file__):
            frame = frame.f_back
            depth += 1

        def rename(loguru_record: Record) -> None:
            loguru_record["name"] = record.name

        logger.patch(rename).opt(depth=depth, exception=record.exc_info).log(
            level, record.getMessage()
        )


def setup_logging(
    level: str = "INFO", log_format: LogFormat = "text", sink: TextIO | None = None
) -> None:
    """Log to ``sink`` (stderr) at ``level`` in ``log_format``.

    Third-party INFO chatter (Pipecat, google-genai, websockets) is kept out unless ``DEBUG``.

    Args:
        level: loguru level name (``VOICEBOT_LOG_LEVEL``).
        log_format: ``text`` or ``json`` (``VOICEBOT_LOG_FORMAT``).
        sink: Where lines go (tests pass a buffer); stderr when None.

    Raises:
        ValueError: ``log_format`` is not one of ``LOG_FORMATS``.
    """
    if log_format not in LOG_FORMATS:
        expected = " or ".join(LOG_FORMATS)
        raise ValueError(f"log format: got {log_format!r}, expected {expected}")
    debug = level.upper() in ("DEBUG", "TRACE")

    def _filter(record: Record) -> bool:
        call_sid = record["extra"].get("call_sid")
        record["extra"]["call"] = f"[{call_sid}] " if call_sid else ""
        if not debug and str(record["name"]).startswith(_NOISY_PREFIXES):
            return record["level"].no >= logger.level("WARNING").no
        return True

    logger.remove()
    # diagnose=False: tracebacks must not print local variables (phone numbers, audio).
    logger.add(
        sys.stderr if sink is None else sink,
        level=level.upper(),
        format=FORMAT if log_format == "text" else _json_format,
        filter=_filter,
        colorize=None if log_format == "text" else False,
        backtrace=False,
        diagnose=False,
    )
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _ToLoguru)]:
        root.removeHandler(handler)
    root.addHandler(_ToLoguru())
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
