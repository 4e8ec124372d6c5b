"""Signatures on the webhook and the media upgrade, and bad input on the media socket."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid

import aiohttp
import pytest
from loguru import logger

from sim.caller import CallPlan, parse_twiml, place_call, twilio_signature, webhook_params
from sim.caller.twilio_webhook import start_message
from sim.emulator import EmulatorConfig
from sim.emulator.config import SHORT_REPLY_WAV
from sim.testing import TEST_THINK_MS, wait_until

pytestmark = pytest.mark.e2e

TOKEN = "test-auth-token"
# A 2 s greeting and reply (the default answer is 13.8 s): these calls only need bot audio.
SHORT = SHORT_REPLY_WAV


def _short_voice() -> EmulatorConfig:
    return EmulatorConfig(think_ms=TEST_THINK_MS, greeting_wav=SHORT, answer_wav=SHORT)


async def _webhook(session, url: str, token: str | None, call_sid: str) -> tuple[int, str]:
    params = webhook_params(call_sid, "AC" + "1" * 32, "+15005550001", "+15005550006")
    headers = {"X-Twilio-Signature": twilio_signature(token, url, params)} if token else {}
    async with session.post(url, data=params, headers=headers) as resp:
        return resp.status, await resp.text()


async def test_forged_and_missing_webhook_signatures_are_refused(make_server):
    server = await make_server(twilio_auth_token=TOKEN)
    url = server.url + "/twilio/voice"
    async with aiohttp.ClientSession() as session:
        assert (await _webhook(session, url, "not-the-token", "CA1"))[0] == 403
        assert (await _webhook(session, url, None, "CA2"))[0] == 403
        status, body = await _webhook(session, url, TOKEN, "CA3")
    assert status == 200 and "<Stream" in body

    result = await place_call(server.url, CallPlan().hangup(), auth_token="forged")
    assert not result.ok
    assert result.failure == "webhook: HTTP 403"
    assert server.emulator.sessions_total == 0


async def test_forged_and_missing_upgrade_signatures_are_refused(make_emulator, make_server):
    # No pre-warming: CA9's signed webhook would open its session (tests/test_prewarm_e2e.py).
    emu = await make_emulator(_short_voice())
    server = await make_server(emulator=emu, twilio_auth_token=TOKEN, prewarm=False)
    async with aiohttp.ClientSession() as session:
        status, body = await _webhook(session, server.url + "/twilio/voice", TOKEN, "CA9")
        assert status == 200
        stream_url = parse_twiml(body).stream_url
        for headers in ({}, {"X-Twilio-Signature": twilio_signature("forged", stream_url, {})}):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(stream_url, headers=headers)
            assert refused.value.status == 403
    # A correctly signed call goes through, end to end.
    result = await place_call(server.url, CallPlan().wait_for_greeting().hangup(), auth_token=TOKEN)
    assert result.ok, result.failure
    assert server.emulator.sessions_total == 1


class RawStream:
    """A hand-driven Twilio media stream, for sending what Twilio never would."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, stream_sid: str, start: dict):
        self.ws = ws
        self.stream_sid = stream_sid
        self.start = start

    @classmethod
    async def open(cls, session: aiohttp.ClientSession, server_url: str) -> RawStream:
        call_sid = "CA" + uuid.uuid4().hex
        status, body = await _webhook(session, server_url + "/twilio/voice", None, call_sid)
        assert status == 200
        twiml = parse_twiml(body)
        ws = await session.ws_connect(twiml.stream_url)
        stream_sid = "MZ" + uuid.uuid4().hex
        start = start_message(call_sid, stream_sid, twiml.parameters)
        await ws.send_json({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        return cls(ws, stream_sid, start)

    def media(self, payload: str, stream_sid: str | None = None) -> str:
        return json.dumps(
            {
                "event": "media",
                "streamSid": stream_sid or self.stream_sid,
                "media": {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": payload},
            }
        )

    async def bot_media_count(self, secs: float) -> int:
        """Count the bot's media messages over ``secs`` while sending caller silence."""
        silence = base64.b64encode(b"\xff" * 160).decode()
        count = 0
        loop = asyncio.get_running_loop()
        end = loop.time() + secs
        while loop.time() < end:
            await self.ws.send_str(self.media(silence))
            try:
                msg = await self.ws.receive(timeout=0.02)
            except TimeoutError:
                continue
            if msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data)["event"] == "media":
                count += 1
        return count


async def test_bad_input_is_ignored_and_counted_while_other_calls_flow(make_emulator, make_server):
    server = await make_server(emulator=await make_emulator(_short_voice()))
    lines: list[str] = []
    sink = logger.add(lines.append, level="INFO", format="{message}")
    try:
        async with aiohttp.ClientSession() as session:
            healthy = asyncio.create_task(
                place_call(
                    server.url,
                    CallPlan().wait_for_greeting().say("caller_question.wav").wait_for_reply(),
                ),
                name="healthy-call",
            )
            raw = await RawStream.open(session, server.url)
            await raw.ws.send_str(json.dumps(raw.start))
            # The 2 s greeting flows (after a 0.4 s setup) until ~2.8 s, past both counts.
            assert await raw.bot_media_count(1.5) > 0
            for _ in range(3):
                await raw.ws.send_str("this is not json")
                await raw.ws.send_bytes(b"\x00\x01binary")
                await raw.ws.send_str(json.dumps({"event": "bogus", "streamSid": raw.stream_sid}))
                await raw.ws.send_str(raw.media(base64.b64encode(b"\xff" * 160).decode(), "MZx"))
                await raw.ws.send_str(raw.media("!!not base64!!"))
            # The call survives all of it: bot audio keeps coming.
            assert await raw.bot_media_count(0.5) > 0
            await raw.ws.close()
            result = await healthy
            assert await wait_until(lambda: len(server.calls) == 0, 2.0)
    finally:
        logger.remove(sink)

    assert result.ok, result.failure
    assert result.gap_max_ms < 60, result.gaps_ms
    ended = [line for line in lines if "ended after" in line and "bad input" in line]
    assert len(ended) == 1, lines
    for kind in ("invalid_json", "binary", "unknown_event", "wrong_stream_sid", "invalid_payload"):
        assert f"'{kind}': 3" in ended[0], ended[0]
    # One warning per kind, not one per message.
    warnings = [line for line in lines if "not json" in line.lower() or "binary" in line.lower()]
    assert len(warnings) <= 3


@pytest.mark.parametrize(
    ("first", "code", "reason"),
    [
        ("media", 1008, "protocol error: 'media' before 'start'"),
        ("huge", 1009, ""),
    ],
)
async def test_protocol_violations_close_the_stream(make_server, first, code, reason):
    server = await make_server()
    async with aiohttp.ClientSession() as session:
        raw = await RawStream.open(session, server.url)
        if first == "media":
            await raw.ws.send_str(raw.media(base64.b64encode(b"\xff" * 160).decode()))
        else:
            await raw.ws.send_str(json.dumps(raw.start))
            await raw.ws.send_str("x" * (64 * 1024 + 1))
        msg = await raw.ws.receive(timeout=5)
        while msg.type == aiohttp.WSMsgType.TEXT:  # bot audio sent before the close
            msg = await raw.ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE
        assert raw.ws.close_code == code
        if reason:
            assert msg.extra == reason
    assert await wait_until(lambda: len(server.calls) == 0, 2.0)
    if first == "media":
        assert server.emulator.sessions_total == 0


async def test_without_a_token_proxied_requests_are_refused(make_server):
    server = await make_server()
    params = webhook_params("CA77", "AC" + "1" * 32, "+15005550001", "+15005550006")
    async with aiohttp.ClientSession() as session:
        for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
            async with session.post(
                server.url + "/twilio/voice", data=params, headers={header: "203.0.113.9"}
            ) as resp:
                assert resp.status == 403
                assert "proxy or tunnel" in await resp.text()
    assert server.emulator.sessions_total == 0


async def test_a_stream_needs_its_own_fresh_twiml_when_signatures_are_enforced(make_server):
    server = await make_server(twilio_auth_token=TOKEN)
    async with aiohttp.ClientSession() as session:
        status, body = await _webhook(session, server.url + "/twilio/voice", TOKEN, "CA5")
        twiml = parse_twiml(body)
        signature = {"X-Twilio-Signature": twilio_signature(TOKEN, twiml.stream_url, {})}

        async def start(call_sid: str, token: str) -> aiohttp.ClientWebSocketResponse:
            ws = await session.ws_connect(twiml.stream_url, headers=signature)
            raw = RawStream(ws, "MZ" + uuid.uuid4().hex, {})
            params = dict(twiml.parameters, call_token=token)
            start = {
                "event": "start",
                "streamSid": raw.stream_sid,
                "start": {"streamSid": raw.stream_sid, "callSid": call_sid,
                          "customParameters": params},
            }  # fmt: skip
            await ws.send_str(json.dumps(start))
            return ws

        async def close_code(call_sid: str, token: str) -> int | None:
            ws = await start(call_sid, token)
            msg = await ws.receive(timeout=5)
            while msg.type == aiohttp.WSMsgType.TEXT:
                msg = await ws.receive(timeout=5)
            await ws.close()
            return ws.close_code

        # A token that is not ASCII is refused like any bad token (not a crash).
        assert await close_code("CA5", "ç" * 32) == 1008
        # The reserved stream runs; replaying the same signed upgrade for it later does not.
        first = await start("CA5", twiml.parameters["call_token"])
        assert await wait_until(lambda: len(server.calls) == 1, 5.0)
        await first.close()
        assert await wait_until(lambda: len(server.calls) == 0, 5.0)
        # Issue 13: the token is single-use, so the replay is refused as such (was 1013).
        assert await close_code("CA5", twiml.parameters["call_token"]) == 1008


async def test_a_stream_that_goes_quiet_ends_and_frees_its_session(make_emulator, make_server):
    # Twilio sends media every 20 ms while a call is up; a stream that stops sending after
    # `start` is dead: the call must end and free its Gemini session and slot long before the
    # persona's maximum duration. Scaled: 10 s -> 1 s. A healthy call alongside is untouched
    # (it lasts ~3 s with its 2 s greeting, then 1 s more, past the quiet stream's end).
    server = await make_server(emulator=await make_emulator(_short_voice()), time_scale=0.1)
    async with aiohttp.ClientSession() as session:
        healthy = asyncio.create_task(
            place_call(server.url, CallPlan().wait_for_greeting().pause(1.0).hangup()),
            name="healthy-call",
        )
        raw = await RawStream.open(session, server.url)
        await raw.ws.send_str(json.dumps(raw.start))
        loop = asyncio.get_running_loop()
        started = loop.time()  # the media timeout counts from `start`
        assert await wait_until(lambda: server.emulator.active_sessions == 2, 5.0)
        msg = None
        while loop.time() - started < 5.0:  # read (and ignore) bot audio; send nothing
            msg = await raw.ws.receive(timeout=5.0)
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                break
        quiet_for = loop.time() - started
        result = await healthy

    assert msg is not None and msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert 0.9 <= quiet_for < 2.5, quiet_for  # the scaled 1 s timeout, checked every 0.25 s
    assert await wait_until(lambda: server.emulator.active_sessions == 0, 2.0)
    assert await wait_until(lambda: len(server.calls) == 0, 2.0)
    assert result.ok, result.failure
    assert result.gap_max_ms < 100  # the other call did not notice
