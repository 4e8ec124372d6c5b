"""A hand-driven Twilio call for attack tests: what Twilio sends, then what it never would.

:class:`SignedTwilio` plays Twilio behind a TLS-terminating proxy: it signs the webhook and the
media upgrade over the *public* URLs (``PUBLIC_URL``, ``wss://``) while connecting to the
server's loopback address, exactly as the server sees a production deployment. Each step is
separate so a test can capture a webhook's TwiML and upgrade and use them again (a replay), or
send a ``start`` whose parameters differ from the TwiML's (steering).
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from yarl import URL

from sim.caller.twilio_webhook import (
    Twiml,
    parse_twiml,
    start_message,
    twilio_signature,
    webhook_params,
)

SILENCE_FRAME = base64.b64encode(b"\xff" * 160).decode()


@dataclass
class StreamOutcome:
    """What the server did with a ``start``: bot audio messages seen, then the close (if any)."""

    bot_media: int
    close_code: int | None
    close_reason: str


@dataclass
class SignedTwilio:
    """Twilio as seen by a server configured with ``auth_token`` and ``public_url``.

    Attributes:
        session: The HTTP session to use.
        server_url: Where the server listens (``http://127.0.0.1:PORT``).
        public_url: The server's ``PUBLIC_URL`` (what Twilio signs).
        auth_token: The Twilio auth token.
    """

    session: aiohttp.ClientSession
    server_url: str
    public_url: str
    auth_token: str

    async def webhook(
        self,
        call_sid: str,
        *,
        from_: str = "+15005550001",
        to: str = "+15005550006",
        query: str = "",
    ) -> Twiml:
        """POST the signed voice webhook; return the TwiML (raises on a non-200 answer)."""
        params = webhook_params(call_sid, "AC" + "1" * 32, from_, to)
        path = "/twilio/voice" + (f"?{query}" if query else "")
        signature = twilio_signature(self.auth_token, self.public_url + path, params)
        url = URL(self.server_url + path, encoded=True)  # sent byte for byte as signed
        async with self.session.post(
            url, data=params, headers={"X-Twilio-Signature": signature}
        ) as resp:
            body = await resp.text()
            if resp.status != 200:
                raise AssertionError(f"webhook: HTTP {resp.status}: {body}")
        return parse_twiml(body)

    async def upgrade(self, twiml: Twiml) -> aiohttp.ClientWebSocketResponse:
        """Open the media stream the TwiML names, signed as Twilio signs it."""
        assert twiml.stream_url, "TwiML without <Stream url>"
        signature = twilio_signature(self.auth_token, twiml.stream_url, {})
        public = urlsplit(twiml.stream_url)
        local = urlsplit(self.server_url)
        url = urlunsplit(("ws", local.netloc, public.path, "", ""))
        return await self.session.ws_connect(url, headers={"X-Twilio-Signature": signature})

    @staticmethod
    def start_message(call_sid: str, parameters: dict[str, str]) -> tuple[str, str]:
        """``(streamSid, start JSON)`` for a stream of ``call_sid`` with these parameters."""
        stream_sid = "MZ" + uuid.uuid4().hex
        return stream_sid, json.dumps(start_message(call_sid, stream_sid, parameters))

    async def run_stream(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        call_sid: str,
        parameters: dict[str, str],
        *,
        talk_secs: float,
        until_heard: bool = False,
    ) -> StreamOutcome:
        """Send ``connected``, ``start``, caller silence for ``talk_secs``, then ``stop``.

        Stops early when the server closes, or with ``until_heard`` at the bot's first audio
        (``talk_secs`` is then the most it waits: a test that only asks whether the call was
        served does not bet on how soon its greeting comes); counts the bot's audio messages.
        """
        stream_sid, start = self.start_message(call_sid, parameters)
        await ws.send_str('{"event":"connected","protocol":"Call","version":"1.0.0"}')
        await ws.send_str(start)
        loop = asyncio.get_running_loop()
        end = loop.time() + talk_secs
        media = json.dumps(
            {"event": "media", "streamSid": stream_sid,
             "media": {"track": "inbound", "chunk": "1", "timestamp": "0",
                       "payload": SILENCE_FRAME}}
        )  # fmt: skip
        bot_media = 0
        while loop.time() < end and not ws.closed:
            try:
                msg = await ws.receive(timeout=0.02)
            except TimeoutError:
                await ws.send_str(media)
                continue
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                return StreamOutcome(bot_media, ws.close_code, str(msg.extra or ""))
            if msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data).get("event") == "media":
                bot_media += 1
                if until_heard:
                    break
        if not ws.closed:
            await ws.send_str(json.dumps({"event": "stop", "streamSid": stream_sid}))
            await ws.close()
        return StreamOutcome(bot_media, ws.close_code, "")
