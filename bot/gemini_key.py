"""Check ``GEMINI_API_KEY`` once at start, before the server takes a call.

A wrong key used to be noticed at the first call, as a Live API close that the log blamed on
the persona. ``check_gemini_key`` asks Google instead, with the cheapest authenticated call
there is: ``GET {base}/{version}/models?pageSize=1`` (``client.aio.models.list`` through the
process's own shared client, so the same base URL and CA as the calls). It costs no Live
session, so it cannot be refused by, nor use up, the concurrent-session quota.

- 400/401/403 (``API_KEY_INVALID``, no key, key not allowed for this API): ``KeyRejected``,
  the server refuses to start with a message naming ``GEMINI_API_KEY``.
- Anything else (no route, TLS failure, timeout, 429, 5xx): Google could not answer now; a
  warning, and the server serves anyway (refusing to start on a transient outage would turn
  a blip into downtime).
"""

from __future__ import annotations

import asyncio

from google.genai import errors
from loguru import logger

from pipelines.gemini.clients import GeminiClients

CHECK_TIMEOUT_SECS = 10.0
CHECK_API_VERSION = "v1beta"  # where Google serves models.list for API keys
_KEY_STATUSES = (400, 401, 403)


class KeyRejected(RuntimeError):
    """Google refused ``GEMINI_API_KEY`` (the message says what and how to fix it)."""


async def check_gemini_key(
    gemini: GeminiClients, where: str, timeout_secs: float = CHECK_TIMEOUT_SECS
) -> bool:
    """Ask the Gemini API whether the key works; True if it answered yes, False if unreachable.

    Args:
        gemini: The process's clients (key, base URL, CA).
        where: The base URL for messages (``GEMINI_BASE_URL`` or Google's).
        timeout_secs: How long to wait for an answer before calling it unreachable.

    Raises:
        KeyRejected: the service refused the key.
    """
    client = gemini.get(CHECK_API_VERSION)
    try:
        await asyncio.wait_for(
            client.aio.models.list(config={"page_size": 1}), timeout=timeout_secs
        )
    except errors.APIError as e:
        status = f"HTTP {e.code} {e.status or ''}".rstrip()
        said = " ".join(str(e.message or "").split()) or "(no message)"
        if e.code in _KEY_STATUSES:
            raise KeyRejected(
                f"GEMINI_API_KEY was rejected by the Gemini API at {where} ({status}: {said}). "
                "Fix: set GEMINI_API_KEY to a valid key for the Gemini API "
                "(https://aistudio.google.com/apikey), or pass --emulator to serve the "
                "Live API emulator on purpose."
            ) from e
        logger.warning(
            f"GEMINI_API_KEY could not be checked at start: the Gemini API at {where} answered "
            f"{status}: {said}; serving anyway (calls will fail if the key is bad)"
        )
        return False
    except Exception as e:  # no route, TLS, DNS, timeout: transient, so serve anyway
        what = type(e).__name__ + (f": {e}" if str(e) else "")
        logger.warning(
            f"GEMINI_API_KEY could not be checked at start: the Gemini API at {where} could not "
            f"be reached ({what}); serving anyway (calls will fail until it can be)"
        )
        return False
    logger.info(f"GEMINI_API_KEY accepted by the Gemini API at {where}")
    return True
