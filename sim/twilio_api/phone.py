"""One placed call's life on the simulated network, as Twilio runs it.

``queued`` → ``initiated`` → ``ringing`` → the number's behaviour: ``busy`` / ``no-answer`` /
``failed``, or answered (``in-progress``); with ``MachineDetection`` Twilio listens first and
fetches the ``Url`` only once it has decided (``AnsweredBy``); then the TwiML runs:
``<Connect><Stream>`` is the simulated caller (``sim.caller.driver.run_stream``) on the
server's media socket, ``<Say>`` takes as long as its words, ``<Hangup/>`` ends the call,
``<Redirect>`` POSTs the call's parameters to its URL and runs the TwiML found there. A
REST ``Status=completed`` hangs up whatever is running. Status callbacks for the events the
call asked for (``StatusCallbackEvent``; ``completed`` always) are signed with the auth token
and sent in order, numbered by ``SequenceNumber``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import aiohttp
from loguru import logger

from sim.caller.driver import run_stream
from sim.caller.frame_ticker import FrameTicker
from sim.caller.result import CallResult
from sim.caller.twilio_webhook import (
    REDIRECT_FETCH_SECS,
    RedirectChain,
    Twiml,
    parse_twiml,
    twilio_signature,
)
from sim.twilio_api import numbers as net
from sim.twilio_api.numbers import FakeTwilioConfig

FINAL = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})


@dataclass
class Said:
    """A ``<Say>`` the network played: when (seconds from the call's creation), what, language."""

    at: float
    text: str
    language: str | None
    ended_at: float = 0.0


@dataclass
class SimCall:
    """A call placed through the fake API, and everything that happened to it.

    Times are seconds on ``time.monotonic`` (``created`` is the creation, others absolute).
    """

    sid: str
    to: str
    from_: str
    form: dict[str, list[str]]
    created: float = field(default_factory=time.monotonic)
    status: str = "queued"
    answered_by: str | None = None
    answered_at: float | None = None
    beep_at: float | None = None
    webhook_at: float | None = None
    ended_at: float | None = None
    twiml: str | None = None
    said: list[Said] = field(default_factory=list)
    stream: CallResult | None = None
    hung_up_by_api: bool = False
    redirects: list[str] = field(default_factory=list)
    webhook_urls: list[str] = field(default_factory=list)  # the Url, then each <Redirect>'s
    statuses: list[tuple[float, str]] = field(default_factory=list)
    callbacks_sent: list[str] = field(default_factory=list)
    callback_errors: list[str] = field(default_factory=list)
    date_created: datetime = field(default_factory=lambda: datetime.now(UTC))
    hangup: asyncio.Event = field(default_factory=asyncio.Event)

    def one(self, name: str, default: str | None = None) -> str | None:
        """The first value of a form field."""
        values = self.form.get(name)
        return values[0] if values else default

    @property
    def duration_secs(self) -> int:
        """Seconds from answer to end, rounded up like Twilio's ``duration``."""
        if self.answered_at is None:
            return 0
        return math.ceil((self.ended_at or time.monotonic()) - self.answered_at)

    def resource(self, account_sid: str) -> dict[str, Any]:
        """Twilio's JSON call resource."""
        return {
            "sid": self.sid,
            "account_sid": account_sid,
            "to": self.to,
            "to_formatted": self.to,
            "from": self.from_,
            "from_formatted": self.from_,
            "status": self.status,
            "direction": "outbound-api",
            "answered_by": self.answered_by,
            "duration": str(self.duration_secs) if self.status in FINAL else None,
            "date_created": format_datetime(self.date_created, usegmt=True),
            "api_version": "2010-04-01",
            "uri": f"/2010-04-01/Accounts/{account_sid}/Calls/{self.sid}.json",
        }


class PhoneNetwork:
    """Runs placed calls to their end.

    Args:
        config: The account and the numbers' behaviours.
        session: For webhooks, callbacks and media streams.
        ticker: The shared 20 ms sender of the simulated callers.
    """

    def __init__(
        self, config: FakeTwilioConfig, session: aiohttp.ClientSession, ticker: FrameTicker
    ) -> None:
        self.config = config
        self._session = session
        self._ticker = ticker
        self.tasks: set[asyncio.Task[None]] = set()

    def start(self, call: SimCall) -> None:
        """Run ``call`` in its own task."""
        task = asyncio.create_task(self._run(call), name=f"fake-twilio:{call.sid}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _sleep(self, call: SimCall, secs: float) -> bool:
        """Wait ``secs`` (scaled); False if the call was hung up through the API meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(call.hangup.wait(), secs * self.config.time_scale)
        return not call.hangup.is_set()

    async def _run(self, call: SimCall) -> None:
        try:
            await self._lifecycle(call)
        except Exception as e:  # the fake must never die silently: the test reads the error
            logger.exception(f"fake Twilio: call {call.sid} crashed: {e!r}")
            call.callback_errors.append(f"crash: {e!r}")
            if call.status not in FINAL:
                await self._set(call, "failed")

    async def _lifecycle(self, call: SimCall) -> None:
        behaviour = self.config.behaviour(call.to)
        await self._set(call, "initiated")
        if not await self._sleep(call, 0.3):
            return await self._set(call, "canceled")
        await self._set(call, "ringing")
        timeout = float(call.one("Timeout", "60") or 60)
        if behaviour.kind == "busy":
            await self._sleep(call, net.BUSY_SECS)
            return await self._set(call, "busy")
        if behaviour.kind == "failed":
            await self._sleep(call, net.FAILED_SECS)
            return await self._set(call, "failed")
        if behaviour.kind == "no-answer" or behaviour.ring_secs >= timeout:
            if not await self._sleep(call, timeout):
                return await self._set(call, "canceled")
            return await self._set(call, "no-answer")
        if not await self._sleep(call, behaviour.ring_secs):
            return await self._set(call, "canceled")
        call.answered_at = time.monotonic()
        detection = call.one("MachineDetection")
        if detection in ("Enable", "DetectMessageEnd"):
            call.answered_by, wait = self._detect(call, behaviour, detection)
        else:
            wait = 0.0
        await self._set(call, "in-progress")
        if behaviour.kind == "machine":
            call.beep_at = call.answered_at + behaviour.greeting_secs * self.config.time_scale
        if wait and not await self._sleep(call, wait):
            return await self._set(call, "completed")
        await self._follow_twiml(call, behaviour)
        await self._set(call, "completed")

    def _detect(
        self, call: SimCall, behaviour: net.NumberBehaviour, detection: str
    ) -> tuple[str, float]:
        """Who answered and how long Twilio's detection listens before it says so."""
        limit = float(call.one("MachineDetectionTimeout", "30") or 30)
        if behaviour.kind == "person":
            verdict, secs = "human", net.HELLO_SECS + net.SPEECH_END_THRESHOLD_SECS
        elif detection == "Enable":
            verdict, secs = "machine_start", net.SPEECH_THRESHOLD_SECS + 0.4
        else:
            verdict, secs = "machine_end_beep", behaviour.greeting_secs + net.BEEP_DETECT_SECS
        return ("unknown", limit) if secs > limit else (verdict, secs)

    async def _follow_twiml(self, call: SimCall, behaviour: net.NumberBehaviour) -> None:
        chain = RedirectChain(call.one("Url") or "")
        while True:
            twiml = await self._fetch_twiml(call, chain.url)
            if twiml is None:
                return
            call.twiml = twiml
            try:
                tw, root = parse_twiml(twiml), ET.fromstring(twiml)
                redirect = root.find("Redirect")
                if not chain.follow(tw.redirect, tw.redirect_method):
                    break
            except ValueError as e:  # ET.ParseError is one too
                call.callback_errors.append(f"webhook: {e}")
                return
            # Like Twilio: the verbs before it run, then the same call parameters are POSTed
            # to the new URL, over a new connection.
            if not await self._run_verbs(call, behaviour, tw, root, until=redirect):
                return
            if not await self._sleep(call, REDIRECT_FETCH_SECS):
                return
        await self._run_verbs(call, behaviour, tw, root)

    async def _run_verbs(
        self,
        call: SimCall,
        behaviour: net.NumberBehaviour,
        tw: Twiml,
        root: ET.Element,
        until: ET.Element | None = None,
    ) -> bool:
        """Run the document's verbs in order, up to ``until`` (a ``<Redirect>``).

        Returns:
            False when the call ended on the way (``<Hangup/>`` or a hang-up).
        """
        for verb in root:
            if verb is until or call.hangup.is_set():
                return not call.hangup.is_set()
            if verb.tag == "Connect" and verb.find("Stream") is not None:
                await self._stream(call, behaviour, tw)
            elif verb.tag == "Say":
                text = (verb.text or "").strip()
                said = Said(time.monotonic() - call.created, text, verb.get("language"))
                call.said.append(said)
                words = max(1, len(text.split()))
                completed = await self._sleep(call, words / net.SAY_WORDS_PER_SEC)
                said.ended_at = time.monotonic() - call.created
                if not completed:
                    return False
            elif verb.tag == "Hangup":
                return False
            elif verb.tag == "Pause":
                if not await self._sleep(call, float(verb.get("length", "1"))):
                    return False
        return not call.hangup.is_set()

    async def _fetch_twiml(self, call: SimCall, url: str) -> str | None:
        call.webhook_urls.append(url)
        form = self._form(call)
        form["CallStatus"] = "in-progress"
        if call.answered_by is not None:
            form["AnsweredBy"] = call.answered_by
            detected = time.monotonic() - (call.answered_at or time.monotonic())
            form["MachineDetectionDuration"] = str(int(detected * 1000))
        call.webhook_at = time.monotonic()
        status, body = await self._post_signed(call, url, form, "webhook")
        if status is not None and status != 200:
            call.callback_errors.append(f"webhook: HTTP {status}")
            return None  # Twilio would play its "application error" message
        return body

    async def _post_signed(
        self, call: SimCall, url: str, form: dict[str, str], what: str
    ) -> tuple[int | None, str | None]:
        """POST ``form`` signed as Twilio does; (status, body), or (None, None) logged."""
        headers = {"X-Twilio-Signature": twilio_signature(self.config.auth_token, url, form)}
        try:
            async with self._session.post(
                url, data=form, headers=headers, timeout=aiohttp.ClientTimeout(total=15)
            ) as resp:
                return resp.status, await resp.text()
        except (aiohttp.ClientError, TimeoutError) as e:
            call.callback_errors.append(f"{what}: {e!r}")
            return None, None

    async def _stream(self, call: SimCall, behaviour: net.NumberBehaviour, tw: Twiml) -> None:
        # The verbs after <Connect> are followed here, not by the caller.
        tw = dataclasses.replace(tw, say_after=None)
        res = CallResult(call.sid)
        plan = behaviour.plan or net.person_plan()
        stream = asyncio.create_task(
            run_stream(
                self._session, self._ticker, tw, plan, res, call.created,
                self.config.account_sid, self.config.auth_token,
            ),
            name=f"fake-twilio:{call.sid}:stream",
        )  # fmt: skip
        hangup = asyncio.create_task(call.hangup.wait(), name=f"fake-twilio:{call.sid}:hangup")
        await asyncio.wait({stream, hangup}, return_when=asyncio.FIRST_COMPLETED)
        hangup.cancel()
        if not stream.done():  # hung up through the REST API: the stream is closed too
            await asyncio.wait({stream}, timeout=0.5)  # the server closing it itself, first
            stream.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            call.stream = await stream

    async def _set(self, call: SimCall, status: str) -> None:
        call.status = status
        now = time.monotonic()
        call.statuses.append((now - call.created, status))
        if status in FINAL:
            call.ended_at = now
            call.hangup.set()
        event = {"initiated": "initiated", "ringing": "ringing", "in-progress": "answered"}.get(
            status, "completed" if status in FINAL else ""
        )
        asked = call.form.get("StatusCallbackEvent") or ["completed"]
        if event and call.one("StatusCallback") and (event in asked or event == "completed"):
            await self._callback(call, event)

    def _form(self, call: SimCall) -> dict[str, str]:
        return {
            "AccountSid": self.config.account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": call.sid,
            "CallStatus": call.status,
            "Direction": "outbound-api",
            "From": call.from_,
            "Caller": call.from_,
            "To": call.to,
            "Called": call.to,
        }

    async def _callback(self, call: SimCall, event: str) -> None:
        url = call.one("StatusCallback") or ""
        form = self._form(call)
        form["CallbackSource"] = "call-progress-events"
        form["SequenceNumber"] = str(len(call.callbacks_sent))
        form["Timestamp"] = format_datetime(datetime.now(UTC), usegmt=True)
        if call.answered_by:
            form["AnsweredBy"] = call.answered_by
        if call.status in FINAL:
            form["CallDuration"] = str(call.duration_secs)
        call.callbacks_sent.append(event)
        status, _ = await self._post_signed(call, url, form, f"status callback {event}")
        if status is not None and status >= 400:
            call.callback_errors.append(f"status callback {event}: HTTP {status}")
