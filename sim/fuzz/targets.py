"""The server's two public surfaces, driven the way an attacker (or a confused Twilio) drives them.

:class:`MediaTarget` opens media-stream WebSockets: fresh ones for junk before ``start``, and a
call that really started (webhook, signed upgrade, ``connected``, ``start`` with the TwiML's
parameters) for junk on a running call; it reconnects when the server closes that call.
:class:`WebhookTarget` sends webhook requests. Both answer each batch with a list of problems
(empty: the server answered as it should) and count the inputs tried.

What is an answer: an HTTP status below 500; a WebSocket close with a code in
:func:`~sim.fuzz.oracle.close_is_an_answer`. A 5xx, a close 1011 or 1006, or a connection the
server dropped without a close is a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import uuid
from collections import Counter
from urllib.parse import urlencode

import aiohttp
from yarl import URL

from sim.caller.twilio_webhook import parse_twiml, twilio_signature, webhook_params
from sim.fuzz.oracle import close_is_an_answer
from sim.fuzz.strategies import Message, WebhookRequest, render

# The media socket's message limit (bot.media_stream.MAX_MESSAGE_BYTES; characters count as
# bytes here, a lower bound for UTF-8).
SERVER_MAX_MESSAGE_BYTES = 16 * 1024

CLOSE_WAIT_SECS = 5.0
BOUNDARY = "fuzz-boundary-7d3f"
ACCOUNT_SID = "AC" + "1" * 32


class MediaTarget:
    """Media-stream connections to ``base_url`` (signed with ``auth_token`` when given)."""

    def __init__(
        self, session: aiohttp.ClientSession, base_url: str, auth_token: str | None
    ) -> None:
        self.session = session
        self.base_url = base_url
        self.auth_token = auth_token
        self.inputs: Counter[str] = Counter()
        self.close_codes: Counter[int | str | None] = Counter()
        self.calls_started = 0
        self._call: _Conn | None = None

    async def _twiml(self, call_sid: str) -> tuple[str, dict[str, str]]:
        url = self.base_url + "/twilio/voice"
        params = webhook_params(call_sid, ACCOUNT_SID, "+15005550001", "+15005550006")
        headers = {}
        if self.auth_token:
            headers["X-Twilio-Signature"] = twilio_signature(self.auth_token, url, params)
        async with self.session.post(url, data=params, headers=headers) as resp:
            text = await resp.text()
            if resp.status != 200:
                raise RuntimeError(f"webhook for {call_sid}: HTTP {resp.status}: {text[:200]}")
        twiml = parse_twiml(text)
        if not twiml.stream_url:
            raise RuntimeError(f"webhook for {call_sid}: no <Stream> in the TwiML: {text[:200]}")
        return twiml.stream_url, twiml.parameters

    async def _connect(self) -> tuple[aiohttp.ClientWebSocketResponse, str, dict[str, str]]:
        """A fresh upgrade, as Twilio makes it for a call the webhook just answered."""
        call_sid = "CA" + uuid.uuid4().hex
        stream_url, parameters = await self._twiml(call_sid)
        headers = {}
        if self.auth_token:
            headers["X-Twilio-Signature"] = twilio_signature(self.auth_token, stream_url, {})
        ws = await self.session.ws_connect(stream_url, headers=headers, autoping=True)
        return ws, call_sid, parameters

    def _judge(self, conn: _Conn, where: str) -> list[str]:
        """A problem unless the server closed with an allowed code (or answered our close)."""
        code = conn.server_close if conn.server_close is not None else conn.ws.close_code
        self.close_codes[code] += 1
        if close_is_an_answer(code, conn.reason):
            return []
        if conn.server_close is None and conn.send_error:
            # We were still writing when the server closed (after a 1009, say): aiohttp's client
            # then drops the unread close frame and reports 1006. The code is unknowable here;
            # a server-side crash behind it would still reach the oracle's log channels.
            self.close_codes[code] -= 1
            self.close_codes["closed while we sent"] += 1
            return []
        if code in (None, 1006) and conn.sent_oversize:
            # A message over the server's limit: the server closes 1009 at once, with our later
            # messages unread in its socket buffer, so its kernel answers them with a reset
            # that can overtake the close frame. The close is the server's answer, not a crash.
            self.close_codes[code] -= 1
            self.close_codes["reset after an oversized message"] += 1
            return []
        if code is None:
            return [f"{where}: the server dropped the connection without a close frame"]
        return [f"{where}: the server closed the stream with {code} ({conn.reason!r})"]

    async def _send(self, conn: _Conn, data: str | bytes) -> bool:
        """Send one message; False when the server already closed the stream."""
        if conn.ws.closed or conn.reader.done():
            return False
        if len(data) > SERVER_MAX_MESSAGE_BYTES:
            conn.sent_oversize = True
        try:
            if isinstance(data, bytes):
                await conn.ws.send_bytes(data)
            else:
                await conn.ws.send_str(data)
        except (aiohttp.ClientError, ConnectionError) as e:
            conn.send_error = repr(e)
            return False
        return True

    async def _end(self, conn: _Conn, where: str) -> list[str]:
        """Close ``conn`` (the server's close, if it came first, is what is judged)."""
        try:
            async with asyncio.timeout(CLOSE_WAIT_SECS):
                if not conn.ws.closed:
                    with contextlib.suppress(aiohttp.ClientError, ConnectionError):
                        await conn.ws.close()
                await conn.reader
        except TimeoutError:
            conn.reader.cancel()
            return [f"{where}: the server did not answer a close within {CLOSE_WAIT_SECS:.0f} s"]
        return self._judge(conn, where)

    async def before_start(self, batch: list[Message]) -> list[str]:
        """Send ``batch`` on a new stream before any valid ``start``; then close it."""
        ws, call_sid, _ = await self._connect()
        conn = _Conn(ws, call_sid, "MZ" + uuid.uuid4().hex)
        for message in batch:
            if not await self._send(conn, render(message, conn.stream_sid, call_sid)):
                break
            self.inputs[f"media:{message.kind}"] += 1
        # Closing waits for the server's close: by then it has read every message sent.
        return await self._end(conn, "before start")

    async def on_call(self, batch: list[Message]) -> list[str]:
        """Send ``batch`` on a running call (started first if none is up)."""
        problems: list[str] = []
        if self._call is None or self._call.reader.done():
            problems += [f"{p} (between batches)" for p in await self.hang_up()]
            ws, call_sid, parameters = await self._connect()
            self._call = _Conn(ws, call_sid, "MZ" + uuid.uuid4().hex)
            await self._call.start(parameters)
            self.calls_started += 1
        call = self._call
        for message in batch:
            if not await self._send(call, render(message, call.stream_sid, call.call_sid)):
                break
            self.inputs[f"call:{message.kind}"] += 1
        await asyncio.sleep(0)
        if call.reader.done():
            after = ", ".join(repr(m)[:100] for m in batch[-3:])
            problems += [f"{p}; the batch ended with {after}" for p in await self.hang_up()]
        return problems

    async def hang_up(self) -> list[str]:
        """End the running call, if any, and judge how it was closed."""
        call, self._call = self._call, None
        return [] if call is None else await self._end(call, "on a call")


class _Conn:
    """One stream: its socket, SIDs, and a task that reads (and drops) what the server sends.

    ``server_close`` is the code of the server's close frame when it closed first (when we do,
    aiohttp hands the reader ``CLOSING`` and keeps the answer's code in ``ws.close_code``).
    """

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, call_sid: str, stream_sid: str):
        self.ws = ws
        self.call_sid = call_sid
        self.stream_sid = stream_sid
        self.server_close: int | None = None
        self.reason = ""
        self.send_error = ""
        self.sent_oversize = False  # a message over the server's limit went out
        self.reader = asyncio.create_task(self._read(), name=f"fuzz:{stream_sid}:reader")

    async def _read(self) -> None:
        with contextlib.suppress(aiohttp.ClientError, ConnectionError):
            while True:
                msg = await self.ws.receive()
                if msg.type == aiohttp.WSMsgType.CLOSE:
                    self.server_close, self.reason = msg.data, msg.extra or ""
                if msg.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSING,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.ERROR,
                ):
                    return

    async def start(self, parameters: dict[str, str]) -> None:
        await self.ws.send_json({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        sid = self.stream_sid
        await self.ws.send_json(
            {
                "event": "start",
                "sequenceNumber": "1",
                "streamSid": sid,
                "start": {
                    "streamSid": sid,
                    "accountSid": ACCOUNT_SID,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "customParameters": parameters,
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
            }
        )


class WebhookTarget:
    """Webhook requests to ``base_url``; ``valid`` signatures use ``auth_token`` when given."""

    def __init__(
        self, session: aiohttp.ClientSession, base_url: str, auth_token: str | None
    ) -> None:
        self.session = session
        self.base_url = base_url
        self.auth_token = auth_token or "no-token"
        self.inputs: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()

    async def send(self, req: WebhookRequest) -> list[str]:
        """Send one request; a problem if the answer is a 5xx or the connection breaks."""
        qs = urlencode(req.query)
        url = self.base_url + req.path + (f"?{qs}" if qs else "")
        headers = dict(req.headers)
        params: dict[str, str] = {}
        if req.raw is not None:
            data = req.raw
        elif req.body_kind == "multipart":
            data = _multipart(req.form)
            headers["Content-Type"] = f"multipart/form-data; boundary={BOUNDARY}"
            params = dict(req.form)
        else:
            data = urlencode(req.form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            params = dict(req.form)
        if req.content_type is not None:
            headers["Content-Type"] = req.content_type
        if req.sign == "valid":
            headers["X-Twilio-Signature"] = twilio_signature(self.auth_token, url, params)
        elif req.sign == "garbage":
            headers["X-Twilio-Signature"] = "bm90IGEgc2lnbmF0dXJl"
        what = f"POST {req.path} ({req.body_kind}, {req.content_type!r}, signature {req.sign})"
        body = io.BytesIO(data) if len(data) > 64 * 1024 else data  # aiohttp: big bodies as files
        try:
            async with self.session.post(URL(url, encoded=True), data=body, headers=headers) as r:
                await r.read()
                status = r.status
        except (aiohttp.ClientConnectionError, aiohttp.ServerDisconnectedError) as e:
            self.inputs["webhook"] += 1
            return [f"{what}: the connection broke: {e!r}"]
        except (ValueError, TypeError, aiohttp.ClientError):
            return []  # the client refused to send it (e.g. a header it cannot encode)
        self.inputs["webhook"] += 1
        self.statuses[status] += 1
        if status >= 500:
            return [f"{what}: HTTP {status}"]
        return []


def _multipart(form: list[tuple[str, str]]) -> bytes:
    """A ``multipart/form-data`` body, written by hand: names the client would refuse too."""
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in form
    ]
    return ("".join(parts) + f"--{BOUNDARY}--\r\n").encode("utf-8", "surrogatepass")
