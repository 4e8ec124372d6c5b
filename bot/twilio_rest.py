"""Twilio REST calls the bot makes during a call (hang up, transfer), over aiohttp.

The twilio SDK's client is synchronous; calling it inside ``async def`` would stall every call
on the loop, so the two requests we need are made with the process's aiohttp session.
"""

from __future__ import annotations

import base64

import aiohttp
from loguru import logger

TWILIO_API_BASE = "https://api.twilio.com"


class TwilioRestError(RuntimeError):
    """Twilio answered a REST request with an error status."""


class TwilioRest:
    """The call-control requests of the Twilio REST API.

    Args:
        session: The process's shared aiohttp client session.
        account_sid: Account SID.
        auth_token: Auth token (basic-auth password).
        base_url: API base, overridable for tests.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        account_sid: str,
        auth_token: str,
        base_url: str = TWILIO_API_BASE,
    ) -> None:
        self._session = session
        self._account_sid = account_sid
        basic = base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode()
        self._headers = {"Authorization": f"Basic {basic}"}
        self._base_url = base_url.rstrip("/")

    async def update_call(self, call_sid: str, **form: str) -> None:
        """POST to the call resource (``Status=completed`` hangs up, ``Twiml=…`` redirects)."""
        url = f"{self._base_url}/2010-04-01/Accounts/{self._account_sid}/Calls/{call_sid}.json"
        timeout = aiohttp.ClientTimeout(total=10)
        async with self._session.post(
            url, data=form, headers=self._headers, timeout=timeout
        ) as resp:
            if resp.status >= 400:
                body = (await resp.text())[:300]
                raise TwilioRestError(
                    f"Twilio REST update of call {call_sid} failed: HTTP {resp.status}: {body}"
                )

    async def hang_up(self, call_sid: str) -> bool:
        """End the call; False (logged) when Twilio refused."""
        try:
            await self.update_call(call_sid, Status="completed")
            return True
        except (TwilioRestError, aiohttp.ClientError, TimeoutError) as e:
            logger.warning(f"hang-up through the REST API failed: {e}")
            return False

    async def redirect(self, call_sid: str, twiml: str) -> bool:
        """Replace the call's TwiML (used for transfers); False (logged) when Twilio refused."""
        try:
            await self.update_call(call_sid, Twiml=twiml)
            return True
        except (TwilioRestError, aiohttp.ClientError, TimeoutError) as e:
            logger.warning(f"call redirect through the REST API failed: {e}")
            return False
