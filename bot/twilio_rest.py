"""The Twilio REST requests the server and the CLI make (calls: create, fetch, list, update).

The twilio SDK's client is synchronous; calling it inside ``async def`` would stall every call
on the loop, so the few requests we need are made with the process's aiohttp session. The base
URL is ``TWILIO_API_BASE_URL`` (``Settings.twilio_api_base_url``; default Twilio's own), used by
every request: hang-up and redirect as much as outbound calls, so a whole deployment can be
pointed at a stand-in (``sim.twilio_api``).

Errors: Twilio answers a refused request with a JSON body ``{"code", "message", "more_info",
"status"}``; it becomes a :class:`TwilioApiError` that says all of it. ``429`` (error 20429,
"Too Many Requests": over the account's calls-per-second or the API's concurrency) is retried
with exponential backoff (``Retry-After`` honoured) before it is raised: a 429 creates nothing,
so retrying even a ``POST`` is safe. Other errors are raised at once (a 5xx on a create may
have created the call, so it is never retried blindly).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterable
from typing import Any

import aiohttp
from loguru import logger

TWILIO_API_BASE = "https://api.twilio.com"
API_VERSION = "2010-04-01"
TOO_MANY_REQUESTS = 20429
# 429 backoff: first wait, doubling up to the cap, at most this many attempts in all.
RETRY_FIRST_SECS = 0.5
RETRY_MAX_SECS = 8.0
RETRY_ATTEMPTS = 8
REQUEST_TIMEOUT_SECS = 10.0

Form = Iterable[tuple[str, str]]


class TwilioRestError(RuntimeError):
    """Twilio could not be reached, or answered a REST request with an error status."""


class TwilioApiError(TwilioRestError):
    """Twilio refused a request; its error body, whole.

    Attributes:
        status: The HTTP status.
        code: Twilio's error code (``21211`` invalid ``To``, ``20003`` authentication,
            ``20404`` not found, ``20429`` too many requests, …); None without a JSON body.
        message: Twilio's message, or the start of the body.
        more_info: The error's documentation page.
        what: The request (method and resource).
    """

    def __init__(
        self, what: str, status: int, code: int | None, message: str, more_info: str | None
    ) -> None:
        self.what, self.status, self.code = what, status, code
        self.message, self.more_info = message, more_info
        code_text = f", error {code}" if code is not None else ""
        info = f" (see {more_info})" if more_info else ""
        super().__init__(f"Twilio REST {what} failed: HTTP {status}{code_text}: {message}{info}")

    @property
    def too_many_requests(self) -> bool:
        """A rate-limit refusal (HTTP 429 or error 20429): nothing was done; retry later."""
        return self.status == 429 or self.code == TOO_MANY_REQUESTS


def _api_error(what: str, status: int, body: str) -> TwilioApiError:
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict) and "message" in data:
        code = data.get("code")
        return TwilioApiError(
            what,
            status,
            code if isinstance(code, int) else None,
            str(data["message"]),
            str(data["more_info"]) if data.get("more_info") else None,
        )
    return TwilioApiError(what, status, None, body[:300].strip() or "(empty body)", None)


class TwilioRest:
    """The Calls resource of the Twilio REST API.

    Args:
        session: The process's shared aiohttp client session.
        account_sid: Account SID.
        auth_token: Auth token (basic-auth password).
        base_url: API base (``TWILIO_API_BASE_URL``).
        retry_first_secs: First backoff after a 429 (tests shorten it).
        retry_attempts: Attempts in all before a 429 is raised.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        account_sid: str,
        auth_token: str,
        base_url: str = TWILIO_API_BASE,
        *,
        retry_first_secs: float = RETRY_FIRST_SECS,
        retry_attempts: int = RETRY_ATTEMPTS,
    ) -> None:
        self._session = session
        self._account_sid = account_sid
        basic = base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode()
        self._headers = {"Authorization": f"Basic {basic}"}
        self._base_url = base_url.rstrip("/")
        self._retry_first = retry_first_secs
        self._attempts = max(1, retry_attempts)
        self.retried_429 = 0  # 429s waited out, for the campaign's summary

    def _url(self, resource: str) -> str:
        return f"{self._base_url}/{API_VERSION}/Accounts/{self._account_sid}/{resource}"

    async def _request(
        self, method: str, resource: str, form: Form | None = None, query: Form | None = None
    ) -> dict[str, Any]:
        what = f"{method} {resource}"
        delay = self._retry_first
        for attempt in range(1, self._attempts + 1):
            try:
                async with self._session.request(
                    method,
                    self._url(resource),
                    data=list(form) if form is not None else None,
                    params=list(query) if query is not None else None,
                    headers=self._headers,
                    timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECS),
                ) as resp:
                    body = await resp.text()
                    if resp.status < 400:
                        data = json.loads(body) if body.strip() else {}
                        return data if isinstance(data, dict) else {"value": data}
                    error = _api_error(what, resp.status, body)
                    retry_after = resp.headers.get("Retry-After", "")
            except (aiohttp.ClientError, TimeoutError, ValueError) as e:
                raise TwilioRestError(
                    f"Twilio REST {what} failed: {type(e).__name__}: {e}".rstrip(": ")
                ) from e
            if not error.too_many_requests or attempt == self._attempts:
                raise error
            self.retried_429 += 1
            wait = delay
            if retry_after.replace(".", "", 1).isdigit():
                wait = max(wait, float(retry_after))
            logger.debug(f"Twilio REST {what}: 429, retry {attempt} in {wait:.2f} s")
            await asyncio.sleep(wait)
            delay = min(delay * 2, RETRY_MAX_SECS)
        raise AssertionError("unreachable")  # pragma: no cover

    async def create_call(self, form: Form) -> dict[str, Any]:
        """``POST Calls.json``: place a call; Twilio's call resource (``sid``, ``status``, …).

        ``form`` is a sequence of pairs so a field may repeat (``StatusCallbackEvent``).

        Raises:
            TwilioApiError: Twilio refused it (after retrying 429s); TwilioRestError: not
                reached.
        """
        return await self._request("POST", "Calls.json", form)

    async def fetch_call(self, call_sid: str) -> dict[str, Any]:
        """``GET Calls/{sid}.json``: the call resource (``status``, ``answered_by``, …)."""
        return await self._request("GET", f"Calls/{call_sid}.json")

    async def list_calls(self, **filters: str) -> list[dict[str, Any]]:
        """``GET Calls.json`` with Twilio's filters (``Status``, ``To``, ``PageSize``; one page)."""
        page = await self._request("GET", "Calls.json", query=list(filters.items()))
        calls = page.get("calls", [])
        return calls if isinstance(calls, list) else []

    async def update_call(self, call_sid: str, **form: str) -> dict[str, Any]:
        """POST to the call resource (``Status=completed`` hangs up, ``Twiml=…`` redirects)."""
        return await self._request("POST", f"Calls/{call_sid}.json", list(form.items()))

    async def hang_up(self, call_sid: str) -> bool:
        """End the call; False (logged) when Twilio refused."""
        try:
            await self.update_call(call_sid, Status="completed")
            return True
        except TwilioRestError as e:
            logger.warning(f"hang-up through the REST API failed: {e}")
            return False

    async def redirect(self, call_sid: str, twiml: str) -> bool:
        """Replace the call's TwiML (used for transfers); False (logged) when Twilio refused."""
        try:
            await self.update_call(call_sid, Twiml=twiml)
            return True
        except TwilioRestError as e:
            logger.warning(f"call redirect through the REST API failed: {e}")
            return False
