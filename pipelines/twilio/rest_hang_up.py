"""The serializer's built-in REST hang-up, for tools without the server's REST client.

The server passes its own client (``ports.CallRest``) to ``TwilioSerializer``; this one opens
a short-lived HTTP session per hang-up, which is fine for a tool placing one call, not for a
server holding hundreds.
"""

from __future__ import annotations

import base64

import aiohttp
from loguru import logger

TWILIO_API_BASE = "https://api.twilio.com"
REST_TIMEOUT_SECS = 10.0


async def rest_hang_up(base_url: str, account_sid: str, auth_token: str, call_sid: str) -> bool:
    """End the call with Twilio's REST API; False (logged) on failure.

    Args:
        base_url: The REST API root (Twilio's, or a fake in tests).
        account_sid: Account SID (Basic auth user).
        auth_token: Auth token (Basic auth password).
        call_sid: The call to end.
    """
    url = f"{base_url.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Calls/{call_sid}.json"
    timeout = aiohttp.ClientTimeout(total=REST_TIMEOUT_SECS)
    basic = base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode("ascii")
    headers = {"Authorization": f"Basic {basic}"}
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(url, data={"Status": "completed"}, headers=headers) as resp,
        ):
            if resp.status < 400 or resp.status == 404:  # 404: the call already ended
                return True
            body = (await resp.text())[:300]
    except (aiohttp.ClientError, TimeoutError) as e:
        body = f"{e.__class__.__name__}: {e}"
    logger.error(f"Twilio REST hang-up of call {call_sid} failed: {body}; the call stays up")
    return False
