"""Limits on HTTP requests to the public listener: size, time, and the signature header first.

A Twilio webhook is a form of about 2 KB, signed in ``X-Twilio-Signature``. The signature covers
the body, so it can only be verified once the body is read; what can be bounded before that is
bounded here (``webhook_limits``, a middleware on ``POST /twilio/...``):

1. **Who** (no body read): with ``TWILIO_AUTH_TOKEN`` set, a request without the header is
   refused 403 at once; without a token, one from a non-loopback or proxied peer is (the same
   rule as ``Authenticator.check_webhook``).
2. **How much**: a ``Content-Length`` over ``WEBHOOK_MAX_BODY_BYTES`` is refused 413 before
   the body is read; a chunked body is cut off there (the app's ``client_max_size``).
3. **How long**: the whole body must arrive within ``WEBHOOK_BODY_TIMEOUT_SECS`` (scaled by
   ``VOICEBOT_TIME_SCALE``): a slow client gets 408 and one WARNING line. A client that
   leaves mid-body is not an error (a DEBUG line, no traceback).

Every refusal answers and closes the connection (``force_close``): no lingering read of an
unwanted body.

**Slow headers** (slowloris): aiohttp has no timeout on the request line and headers; its
``keepalive_timeout`` also runs from the moment a connection opens, and closes a connection
whose first request has not fully arrived by then. ``runner_options`` sets it (with a short
lingering time) for ``bot.server``; that bounds header time per connection, not the number of
such connections, so an exposed server belongs behind a reverse proxy or load balancer that
buffers requests (nginx ``client_header_timeout``/``client_body_timeout``, an ALB's idle
timeout) — see the README, *Deploying*.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from loguru import logger

from bot.app_keys import AUTH, SETTINGS

# A Twilio webhook form is ~2 KB (about 30 short fields); 16 KiB is eight times that.
WEBHOOK_MAX_BODY_BYTES = 16 * 1024
# The whole body must have arrived this long after the headers (Twilio sends it at once).
WEBHOOK_BODY_TIMEOUT_SECS = 10.0
# A connection's first request line and headers must have arrived within this (and an idle
# keep-alive connection is closed after it): aiohttp's keepalive_timeout, see the docstring.
HEADER_TIMEOUT_SECS = 15.0
# After an answer to a request whose body was not read, how long aiohttp reads and discards
# the rest before closing (its default, 10 s, lets a slow client hold the connection on).
LINGERING_SECS = 1.0
WEBHOOK_PREFIX = "/twilio/"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def runner_options(time_scale: float = 1.0) -> dict[str, Any]:
    """``web.AppRunner`` keyword arguments that bound header time and lingering reads."""
    return {
        "keepalive_timeout": HEADER_TIMEOUT_SECS * time_scale,
        "lingering_time": LINGERING_SECS * time_scale,
    }


async def _refuse(request: web.Request, status: int, reason: str) -> web.StreamResponse:
    """Answer ``status`` and close the connection, leaving any unread body unread."""
    logger.warning(f"webhook {request.path} refused {status}: {reason}")
    response = web.Response(status=status, text=f"{reason}\n")
    response.force_close()
    try:
        await response.prepare(request)
        await response.write_eof()
    except ConnectionError:
        pass  # the client is gone already
    request.protocol.force_close()
    return response


def _early_refusal(request: web.Request) -> str | None:
    """Why a webhook is refused on its headers alone, or None."""
    auth = request.app[AUTH]
    if auth.enforcing:
        if not request.headers.get("X-Twilio-Signature"):
            return "missing X-Twilio-Signature (body not read)"
        return None
    # Without a token the rule is about the peer only; no form field takes part.
    return auth.check_webhook(request, {})


@web.middleware
async def webhook_limits(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bound a Twilio webhook's body before the handler reads it (see the module docstring)."""
    if request.method != "POST" or not request.path.startswith(WEBHOOK_PREFIX):
        return await handler(request)
    refusal = _early_refusal(request)
    if refusal:
        return await _refuse(request, 403, f"Forbidden: {refusal}")
    length = request.content_length
    if length is not None and length > WEBHOOK_MAX_BODY_BYTES:
        return await _refuse(
            request,
            413,
            f"Request body too large: {length} bytes, at most {WEBHOOK_MAX_BODY_BYTES} "
            "(a Twilio webhook is ~2 KB)",
        )
    timeout_secs = WEBHOOK_BODY_TIMEOUT_SECS * request.app[SETTINGS].time_scale
    try:
        async with asyncio.timeout(timeout_secs):
            await request.read()  # cached: the handler's request.post() parses it
    except TimeoutError:
        return await _refuse(
            request, 408, f"Request timeout: the body did not arrive within {timeout_secs:g} s"
        )
    except web.HTTPRequestEntityTooLarge:
        return await _refuse(
            request, 413, f"Request body too large: over {WEBHOOK_MAX_BODY_BYTES} bytes"
        )
    except ConnectionError:
        logger.debug(f"webhook {request.path}: the client left before its body was read")
        return web.Response(status=400)  # not delivered: the connection is gone
    return await handler(request)
