"""Caller input limits on the media socket, attacked over loopback against the real server.

Billing (audio faster than real time) and parser (JSON nested 1,000 deep) attacks: each test
asserts the refusal, the log lines, that no traceback was logged, and what reached the Live
API emulator (audio seconds per session, from its in-memory recording).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import uuid
from typing import Any

import aiohttp
import pytest
from loguru import logger

from pipelines.twilio.input_limits import AUDIO_BURST_SECS
from sim.caller import CallPlan, parse_twiml, place_call, webhook_params
from sim.caller.twilio_webhook import start_message
from sim.emulator import EmulatorConfig
from sim.emulator.config import SHORT_REPLY_WAV
from sim.testing import wait_until

pytestmark = pytest.mark.e2e

SILENCE_20MS = base64.b64encode(b"\xff" * 160).decode()
DEEP_ARRAY = "[" * 1000 + "]" * 1000  # 2 KB; json.loads raises RecursionError on it
DEEP_OBJECT = '{"event":' * 1000 + '"media"' + "}" * 1000


class Stream:
    """A hand-driven Twilio media stream (loopback, no signatures), for what Twilio never sends."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, stream_sid: str, start: dict):
        self.ws = ws
        self.stream_sid = stream_sid
        self.start = start

    @classmethod
    async def open(cls, session: aiohttp.ClientSession, server_url: str) -> Stream:
        call_sid = "CA" + uuid.uuid4().hex
        params = webhook_params(call_sid, "AC" + "1" * 32, "+15005550001", "+15005550006")
        async with session.post(server_url + "/twilio/voice", data=params) as resp:
            assert resp.status == 200
            twiml = parse_twiml(await resp.text())
        ws = await session.ws_connect(twiml.stream_url)
        stream_sid = "MZ" + uuid.uuid4().hex
        start = start_message(call_sid, stream_sid, twiml.parameters)
        await ws.send_json({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        return cls(ws, stream_sid, start)

    def media(self, payload: str) -> str:
        return json.dumps(
            {
                "event": "media",
                "streamSid": self.stream_sid,
                "media": {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": payload},
            },
            separators=(",", ":"),
        )

    async def talk(self, secs: float) -> int:
        """Send real-time 20 ms silence for ``secs``; return how many bot media messages came."""
        count = 0
        loop = asyncio.get_running_loop()
        start = loop.time()
        sent = 0
        while loop.time() - start < secs:
            if loop.time() - start >= sent * 0.02:
                await self.ws.send_str(self.media(SILENCE_20MS))
                sent += 1
            try:
                msg = await self.ws.receive(timeout=0.01)
            except TimeoutError:
                continue
            if msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data)["event"] == "media":
                count += 1
        return count

    async def close_message(self, timeout_secs: float = 5.0) -> aiohttp.WSMessage:
        """Read (and drop) bot messages until the server's close."""
        msg = await self.ws.receive(timeout=timeout_secs)
        while msg.type == aiohttp.WSMsgType.TEXT:
            msg = await self.ws.receive(timeout=timeout_secs)
        return msg


class LogCapture:
    """Loguru lines and records of ERROR or worse, plus aiohttp's own (stdlib) log records."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.lines: list[str] = []
        self.errors: list[str] = []
        self._caplog = caplog
        caplog.set_level(logging.WARNING)

    def __enter__(self) -> LogCapture:
        def sink(message: Any) -> None:
            record = message.record
            self.lines.append(record["message"])
            if record["level"].no >= logger.level("ERROR").no or record["exception"]:
                self.errors.append(record["message"])

        self._sink = logger.add(sink, level="INFO", format="{message}")
        return self

    def __exit__(self, *exc: object) -> None:
        logger.remove(self._sink)
        self.errors += [r.getMessage() for r in self._caplog.records if r.levelno >= logging.ERROR]
        self.errors += [r.getMessage() for r in self._caplog.records if r.exc_info]

    def matching(self, text: str) -> list[str]:
        return [line for line in self.lines if text in line]


def received_audio_secs(records: list[dict[str, Any]]) -> float:
    """Seconds of caller audio in one emulator session's recorded ``realtimeInput``s."""
    total = 0.0
    for record in records:
        msg = record["msg"]  # the wire takes camelCase and snake_case field names alike
        audio = (msg.get("realtimeInput") or msg.get("realtime_input") or {}).get("audio")
        if isinstance(audio, dict) and str(audio.get("data", "")).startswith("<"):
            n_bytes = int(audio["data"][1:].split()[0])
            mime = audio.get("mimeType") or audio.get("mime_type") or "rate=16000"
            total += n_bytes / 2 / int(mime.rsplit("=", 1)[1])
    return total


async def test_audio_faster_than_real_time_is_dropped_and_the_call_closed(
    make_emulator, make_server, caplog
):
    # The billing attack: ~560 s of caller audio sent in well under a second. Messages are
    # capped at 16 KiB, so it takes 500 of them (1.125 s each) instead of 100 of 5.6 s.
    # The healthy call meanwhile is greeted with the 2 s short reply.
    emu = await make_emulator(EmulatorConfig(greeting_wav=SHORT_REPLY_WAV))
    server = await make_server(emulator=emu)
    payload = base64.b64encode(b"\xff" * 9000).decode()  # 1.125 s of mu-law
    with LogCapture(caplog) as logs:
        async with aiohttp.ClientSession() as session:
            raw = await Stream.open(session, server.url)
            await raw.ws.send_str(json.dumps(raw.start))
            assert await wait_until(lambda: server.emulator.active_sessions == 1, 5.0)
            healthy = asyncio.create_task(
                place_call(server.url, CallPlan().wait_for_greeting().hangup()),
                name="healthy-call",
            )
            assert await raw.talk(1.0) > 0  # a normal second first: greeting audio flows
            loop = asyncio.get_running_loop()
            started = loop.time()
            sent = 0
            for _ in range(500):
                if raw.ws.closed:
                    break
                try:
                    await raw.ws.send_str(raw.media(payload))
                except ConnectionError:
                    break
                sent += 1
            flood_secs = loop.time() - started
            msg = await raw.close_message()
            closed_after = loop.time() - started
            result = await healthy
            assert await wait_until(lambda: len(server.calls) == 0, 3.0)

    assert flood_secs < 1.0, flood_secs
    assert msg.type == aiohttp.WSMsgType.CLOSE, msg
    assert raw.ws.close_code == 1008
    assert "audio faster than real time" in msg.extra
    assert closed_after < 2.0, closed_after
    # What reached the Live API from the attacked call: the normal second, the allowance,
    # and real time meanwhile; not the hundreds of seconds sent.
    attacked = next(iter(server.emulator.recordings.values()))
    reached = received_audio_secs(attacked)
    print(f"audio reached Gemini from the attacked call: {reached:.2f} s ({sent} sent)")
    assert 0.5 < reached <= 1.0 + AUDIO_BURST_SECS + closed_after + 0.2, reached
    assert len(logs.matching("closing 1008: audio faster than real time")) == 1, logs.lines
    ended = logs.matching("ended after")
    attacked_end = [line for line in ended if raw.start["start"]["callSid"] in line]
    assert len(attacked_end) == 1 and "'audio_too_fast_ms'" in attacked_end[0], ended
    assert ": audio faster than real time" in attacked_end[0]  # the end reason, not "hung up"
    assert logs.errors == []
    assert server.emulator.sessions_total == 2  # the attacked call's and the healthy one's
    assert result.ok, result.failure
    assert result.gap_max_ms < 60, result.gaps_ms


async def test_deep_json_is_counted_as_too_deep_and_the_call_goes_on(make_server, caplog):
    server = await make_server()
    with LogCapture(caplog) as logs:
        async with aiohttp.ClientSession() as session:
            raw = await Stream.open(session, server.url)
            for deep in (DEEP_ARRAY, DEEP_OBJECT):  # before start: junk, counted
                await raw.ws.send_str(deep)
            await raw.ws.send_str(json.dumps(raw.start))
            assert await wait_until(lambda: server.emulator.active_sessions == 1, 5.0)
            assert await raw.talk(0.5) > 0
            for deep in (DEEP_ARRAY, DEEP_OBJECT, DEEP_ARRAY):  # after start: bad input
                await raw.ws.send_str(deep)
            assert await raw.talk(0.5) > 0  # the call goes on
            await raw.ws.close()
            assert await wait_until(lambda: len(server.calls) == 0, 3.0)
            assert server.emulator.sessions_total == 1

            # A stream that never starts and sends only deep JSON: junk, then closed 1008,
            # and no Gemini session for it.
            junk = await Stream.open(session, server.url)
            for _ in range(21):
                await junk.ws.send_str(DEEP_OBJECT)
            msg = await junk.close_message()
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert junk.ws.close_code == 1008
    assert msg.extra == "protocol error: too many invalid messages before 'start'"
    assert server.emulator.sessions_total == 1
    ended = logs.matching("ended after")
    assert len(ended) == 1 and "'too_deep': 3" in ended[0], ended
    assert len(logs.matching("ignored bad input 'too_deep'")) == 1, logs.lines
    assert len(logs.matching("too many invalid messages before 'start'")) == 1, logs.lines
    assert logs.errors == []
    assert not [line for line in logs.lines if "Recursion" in line or "Traceback" in line]


async def test_a_message_flood_is_dropped_and_the_call_closed(make_server, caplog):
    # Tiny messages cost a parse each: 2,000 in a burst, far over 100 a second.
    server = await make_server()
    with LogCapture(caplog) as logs:
        async with aiohttp.ClientSession() as session:
            raw = await Stream.open(session, server.url)
            await raw.ws.send_str(json.dumps(raw.start))
            assert await wait_until(lambda: server.emulator.active_sessions == 1, 5.0)
            assert await raw.talk(0.5) > 0
            mark = json.dumps({"event": "mark", "streamSid": raw.stream_sid, "mark": {"name": "x"}})
            for _ in range(2000):
                await raw.ws.send_str(mark)
            msg = await raw.close_message()
            assert await wait_until(lambda: len(server.calls) == 0, 3.0)
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert raw.ws.close_code == 1008
    assert msg.extra.startswith("too many messages: ")
    ended = logs.matching("ended after")
    assert len(ended) == 1 and ": too many messages" in ended[0], ended
    assert "'too_many_messages'" in ended[0]
    assert len(logs.matching("closing 1008: too many messages")) == 1, logs.lines
    assert logs.errors == []
