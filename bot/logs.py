"""Logging, configured once per process (loguru, Pipecat's logger)."""

from __future__ import annotations

import sys

from loguru import logger

FORMAT = (
    "<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
    "{extra[call]}<level>{message}</level>"
)
_NOISY_PREFIXES = ("pipecat", "google", "websockets")


def setup_logging(level: str = "INFO") -> None:
    """Log to stderr at ``level``; third-party INFO chatter is kept out unless ``DEBUG``."""
    debug = level.upper() in ("DEBUG", "TRACE")

    def _filter(record) -> bool:
        call_sid = record["extra"].get("call_sid")
        record["extra"]["call"] = f"[{call_sid}] " if call_sid else ""
        if not debug and str(record["name"]).startswith(_NOISY_PREFIXES):
            return record["level"].no >= logger.level("WARNING").no
        return True

    logger.remove()
    # diagnose=False: tracebacks must not print local variables (phone numbers, audio).
    logger.add(
        sys.stderr,
        level=level.upper(),
        format=FORMAT,
        filter=_filter,
        backtrace=False,
        diagnose=False,
    )
