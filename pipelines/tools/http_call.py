"""One HTTP tool call: the request, its retries inside the tool's time budget, the response.

The request runs on the server's shared ``aiohttp.ClientSession`` (never a blocking client on
the event loop). ``{name}`` placeholders in the URL take their arguments (URL-quoted); GET and
DELETE send the other arguments as the query string (scalars as text, lists and mappings as
JSON), POST/PUT/PATCH as a JSON body. A connection error, a broken answer, or a 5xx or 429
answer is tried again after a short backoff (``BACKOFF_FIRST_SECS`` doubling) while the budget
(``timeout_secs``, all attempts together) lasts; a 4xx is the service's answer and final. Each
attempt may use what is left of the budget: a service that does not answer is waited for once,
not cut short to make room for a retry it would not answer either.

What goes back to the model (``ToolOutcome.response``):

* success: ``{"result": <the JSON body, or its text>}``; a body over ``MAX_RESULT_BYTES`` is
  cut, sent as text with ``"truncated": true``;
* a 4xx (``rejected``): ``{"status": "rejected", "http_status": 409, "detail": "<body start>"}``,
  for the model to explain (a slot already taken is not an outage);
* a failure (``timeout``, ``unavailable`` (5xx/429 to the end), ``unreachable``,
  ``misconfigured``): ``{"status": "failed", "error": …, "say_to_caller": <say_on_failure>,
  "instruction": "Say exactly these words to the caller: …"}``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from pipelines.personas.tools import HttpTool, url_fields

MAX_RESULT_BYTES = 8 * 1024
DETAIL_CHARS = 300
BACKOFF_FIRST_SECS = 0.2
# An attempt that would get less than this much of the budget is not started.
MIN_ATTEMPT_SECS = 0.05
FAILURES = ("timeout", "unavailable", "unreachable", "misconfigured")
OUTCOMES = ("ok", "invalid_arguments", "rejected", *FAILURES, "cancelled")


@dataclass(frozen=True)
class ToolOutcome:
    """What one call of an HTTP tool came to.

    Attributes:
        outcome: One of ``OUTCOMES``.
        response: The function response for the model (see the module docstring).
        attempts: HTTP requests made (0: none, e.g. invalid arguments).
        http_status: The last answer's status, if any came.
        result_bytes: Size of the body received (before any cut).
        error: What failed, in words (no argument or result contents).
    """

    outcome: str
    response: dict[str, Any]
    attempts: int = 0
    http_status: int | None = None
    result_bytes: int = 0
    error: str | None = None


def failure(tool: HttpTool, outcome: str, error: str, **extra: Any) -> ToolOutcome:
    """A failed call: the response tells the model what failed and the words to say."""
    return ToolOutcome(
        outcome,
        {
            "status": "failed",
            "error": error,
            "say_to_caller": tool.say_on_failure,
            "instruction": f"Say exactly these words to the caller: {tool.say_on_failure}",
        },
        error=error,
        **extra,
    )


def build_request(tool: HttpTool, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """``method``, ``url`` and ``params`` or ``json`` for ``session.request``."""
    in_path = url_fields(tool.url)
    url = tool.url.format_map({k: quote(_text(arguments.get(k, "")), safe="") for k in in_path})
    rest = {k: v for k, v in arguments.items() if k not in in_path}
    request: dict[str, Any] = {"method": tool.method, "url": url}
    if tool.method in ("GET", "DELETE"):
        request["params"] = {k: _text(v) for k, v in rest.items() if v is not None}
    else:
        request["json"] = rest
    return request


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


async def call_http_tool(
    session: aiohttp.ClientSession,
    tool: HttpTool,
    arguments: Mapping[str, Any],
    headers: Mapping[str, str],
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> ToolOutcome:
    """Make the tool's request, retrying within ``tool.timeout_secs`` (module docstring)."""
    request = build_request(tool, arguments)
    deadline = time.monotonic() + tool.timeout_secs
    attempts = 0
    status: int | None = None
    error = "no attempt"
    while attempts <= tool.retries:
        if attempts:
            backoff = BACKOFF_FIRST_SECS * 2 ** (attempts - 1)
            if deadline - time.monotonic() < backoff + MIN_ATTEMPT_SECS:
                break
            await sleep(backoff)
        left = deadline - time.monotonic()
        if left < MIN_ATTEMPT_SECS:
            break
        attempts += 1
        try:
            async with session.request(
                **request, headers=dict(headers), timeout=aiohttp.ClientTimeout(total=left)
            ) as resp:
                status = resp.status
                body, size = await _read_capped(resp)
                if 200 <= status < 300:
                    return _success(resp, body, size, attempts)
                if status < 500 and status != 429:
                    detail = body.decode("utf-8", "replace")[:DETAIL_CHARS]
                    response = {"status": "rejected", "http_status": status, "detail": detail}
                    error = f"HTTP {status}"
                    return ToolOutcome("rejected", response, attempts, status, size, error)
                error = f"HTTP {status}"
        except TimeoutError:
            error = "timed out"
        except aiohttp.ClientConnectionError as e:
            error = f"unreachable ({type(e).__name__})"
        except aiohttp.ClientError as e:  # a broken answer (payload, protocol): try again
            error = type(e).__name__
    budget = f"{tool.timeout_secs:g} s"
    if error in ("timed out", "no attempt"):
        return failure(tool, "timeout", f"no answer within {budget}", attempts=attempts)
    kind = "unreachable" if error.startswith("unreachable") else "unavailable"
    return failure(
        tool, kind, f"{error} after {attempts} attempt(s)", attempts=attempts, http_status=status
    )


async def _read_capped(resp: aiohttp.ClientResponse) -> tuple[bytes, int]:
    """Up to ``MAX_RESULT_BYTES + 1`` bytes of the body, and how many bytes it had in all."""
    kept = bytearray()
    size = 0
    async for chunk in resp.content.iter_chunked(16 * 1024):
        size += len(chunk)
        if len(kept) <= MAX_RESULT_BYTES:
            kept += chunk[: MAX_RESULT_BYTES + 1 - len(kept)]
    return bytes(kept), size


def _success(resp: aiohttp.ClientResponse, body: bytes, size: int, attempts: int) -> ToolOutcome:
    truncated = size > MAX_RESULT_BYTES
    text = body[:MAX_RESULT_BYTES].decode("utf-8", "replace")
    response: dict[str, Any]
    if not truncated and "json" in (resp.content_type or ""):
        try:
            response = {"result": json.loads(text)} if text.strip() else {"result": None}
        except ValueError:
            response = {"result": text}
    else:
        response = {"result": text}
    if truncated:
        response["truncated"] = True
    return ToolOutcome("ok", response, attempts, resp.status, size)
