"""When a webhook delivery is tried again: backoff with jitter, ``Retry-After``, which answers.

Used by the post-call webhook (``bot.post_call``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

RETRY_FIRST_SECS = 1.0
RETRY_MAX_SECS = 60.0
RETRY_AFTER_MAX_SECS = 300.0
RETRY_STATUSES = frozenset({408, 429})
# Jitter has its own generator: the process's global one is the host's (tests seed it).
_JITTER = random.Random()


def backoff_secs(
    failed_attempts: int,
    first_secs: float = RETRY_FIRST_SECS,
    max_secs: float = RETRY_MAX_SECS,
    rng: Callable[[], float] = _JITTER.random,
) -> float:
    """The wait after the ``failed_attempts``-th failed attempt: exponential, with jitter.

    ``first_secs * 2 ** (failed_attempts - 1)``, capped at ``max_secs``, then a random half
    of it taken off ("equal jitter": the wait is in ``[cap / 2, cap]``), so receivers that
    came back are not hit by every sender at once.
    """
    ceiling = min(max_secs, first_secs * 2 ** max(0, failed_attempts - 1))
    return ceiling * (0.5 + 0.5 * rng())


def retry_after_secs(value: str | None, now: float | None = None) -> float | None:
    """A ``Retry-After`` header in seconds (delta-seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def should_retry(status: int | None) -> bool:
    """Whether an attempt that ended with ``status`` (None: no answer) is worth another try."""
    return status is None or status in RETRY_STATUSES or 500 <= status <= 599
