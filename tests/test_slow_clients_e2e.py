"""Slow and oversized HTTP clients against the real server's webhooks (``bot.request_limits``).

Raw sockets, because an HTTP client library would not send a body one byte at a time or stop
half-way through its headers. Each test asserts the answer, the time it took, the log lines,
that nothing was logged with a traceback (loguru and aiohttp's own stdlib logger), and that
no Gemini session was opened.
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
import pytest
from aiohttp import web
from loguru import logger

from bot.request_limits import WEBHOOK_MAX_BODY_BYTES, runner_options
from sim.caller import CallPlan, parse_twiml, place_call, webhook_params
from sim.emulator import EmulatorConfig
from sim.emulator.config import SHORT_REPLY_WAV

pytestmark = pytest.mark.e2e

TOKEN = "test-auth-token"
FORM_HEAD = (
    "POST /twilio/voice HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    "Content-Type: application/x-www-form-urlencoded\r\n"
)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def _read_all(reader: asyncio.StreamReader, timeout_secs: float) -> bytes:
    """Everything the server sends until it closes the connection (or the timeout)."""
    data = b""
    try:
        async with asyncio.timeout(timeout_secs):
            while chunk := await reader.read(4096):
                data += chunk
    except TimeoutError:
        pass
    except ConnectionError:
        pass
    return data


class Logs:
    """Loguru lines, and every record logged at ERROR or with a traceback (loguru and stdlib)."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.WARNING)
        self._caplog = caplog
        self.lines: list[str] = []
        self.errors: list[str] = []

    def __enter__(self) -> Logs:
        def sink(message) -> None:
            record = message.record
            self.lines.append(record["message"])
            if record["level"].no >= logger.level("ERROR").no or record["exception"]:
                self.errors.append(record["message"])

        self._sink = logger.add(sink, level="DEBUG", format="{message}")
        return self

    def __exit__(self, *exc: object) -> None:
        logger.remove(self._sink)
        for r in self._caplog.records:
            if r.levelno >= logging.ERROR or r.exc_info:
                self.errors.append(f"{r.name}: {r.getMessage()}")

    def count(self, text: str) -> int:
        return sum(1 for line in self.lines if text in line)


async def _slow_post(port: int, leave_after_secs: float | None) -> tuple[bytes, float]:
    """A webhook POST whose 300-byte body comes one byte every 0.25 s."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write((FORM_HEAD + "Content-Length: 300\r\n\r\n").encode())

    async def drip() -> None:
        while True:
            writer.write(b"a")
            await writer.drain()
            await asyncio.sleep(0.25)

    dripping = asyncio.create_task(drip(), name="slow-post:drip")
    try:
        if leave_after_secs is not None:
            await asyncio.sleep(leave_after_secs)
            return b"", time.monotonic() - started
        data = await _read_all(reader, 5.0)
        return data, time.monotonic() - started
    finally:
        dripping.cancel()
        await asyncio.gather(dripping, return_exceptions=True)
        writer.close()


async def test_slow_webhook_bodies_are_cut_off_and_a_normal_call_still_works(
    make_emulator, make_server, caplog
):
    # Scaled: the 10 s body timeout is 1 s here. 30 clients dripping a body, 10 more that
    # leave half-way (the case that logged a traceback each), and a normal call meanwhile
    # (greeted with the 2 s short reply).
    emu = await make_emulator(EmulatorConfig(greeting_wav=SHORT_REPLY_WAV))
    server = await make_server(emulator=emu, time_scale=0.1)
    port = _port(server.url)
    with Logs(caplog) as logs:
        slow = [asyncio.create_task(_slow_post(port, None), name=f"slow-{i}") for i in range(30)]
        leavers = [
            asyncio.create_task(_slow_post(port, 0.5), name=f"leaver-{i}") for i in range(10)
        ]
        result = await place_call(server.url, CallPlan().wait_for_greeting().hangup())
        answers = await asyncio.gather(*slow)
        await asyncio.gather(*leavers)
        await asyncio.sleep(0.2)  # let the server notice the leavers

    for data, secs in answers:
        assert data.startswith(b"HTTP/1.1 408 "), data[:80]
        assert b"did not arrive within 1 s" in data
        assert 0.9 <= secs < 2.0, secs  # cut off at the timeout, the connection closed
    assert logs.count("refused 408: Request timeout") == 30, logs.lines
    assert logs.errors == [], logs.errors
    assert result.ok, result.failure
    assert server.emulator.sessions_total == 1  # the normal call's only


async def test_an_unsigned_large_body_is_refused_before_it_is_read(make_server, caplog):
    server = await make_server(twilio_auth_token=TOKEN)
    port = _port(server.url)
    with Logs(caplog) as logs:
        # 1 MiB announced, 4 KiB sent, no signature: refused on the headers.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write((FORM_HEAD + f"Content-Length: {1024 * 1024}\r\n\r\n").encode())
        writer.write(b"a" * 4096)
        await writer.drain()
        unsigned = await _read_all(reader, 2.0)
        writer.close()

        # Signed (the signature cannot be checked before the body is read) but over the cap.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = FORM_HEAD + "X-Twilio-Signature: c2lnbmVk\r\n"
        writer.write((head + f"Content-Length: {1024 * 1024}\r\n\r\n").encode())
        writer.write(b"a" * 4096)
        await writer.drain()
        too_large = await _read_all(reader, 2.0)
        writer.close()

        # The same without a Content-Length (chunked): cut off at the cap.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write((head + "Transfer-Encoding: chunked\r\n\r\n").encode())
        chunk = b"a" * 8192
        for _ in range(4):
            writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        await writer.drain()
        chunked = await _read_all(reader, 2.0)
        writer.close()

    assert unsigned.startswith(b"HTTP/1.1 403 "), unsigned[:80]
    assert b"missing X-Twilio-Signature (body not read)" in unsigned
    assert too_large.startswith(b"HTTP/1.1 413 "), too_large[:80]
    assert f"at most {WEBHOOK_MAX_BODY_BYTES}".encode() in too_large
    assert chunked.startswith(b"HTTP/1.1 413 "), chunked[:80]
    assert logs.count("refused 403: Forbidden: missing X-Twilio-Signature") == 1, logs.lines
    assert logs.count("refused 413: Request body too large") == 2, logs.lines
    assert logs.errors == [], logs.errors
    assert server.emulator.sessions_total == 0


async def test_slow_headers_are_cut_off_by_the_runner_options(caplog):
    # aiohttp has no header timeout; `runner_options` (what `voicebot serve` uses) bounds the
    # time to a first complete request through keepalive_timeout. Scaled: 15 s -> 1.5 s.
    async def ok(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", ok)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, **runner_options(0.1))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        with Logs(caplog) as logs:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            started = time.monotonic()

            async def drip() -> None:
                for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.1)

            dripping = asyncio.create_task(drip(), name="slow-headers:drip")
            data = await _read_all(reader, 5.0)
            closed_after = time.monotonic() - started
            dripping.cancel()
            await asyncio.gather(dripping, return_exceptions=True)
            writer.close()
    finally:
        await runner.cleanup()
    assert data == b""  # closed without an answer: the request never completed
    assert 1.4 <= closed_after < 2.5, closed_after
    assert logs.errors == [], logs.errors


async def test_a_stream_that_never_starts_is_closed_after_the_start_timeout(make_server, caplog):
    # The phase before `start`: 10 s, scaled to 1 s. One log line, no Gemini session.
    # No pre-warming: the signed webhook would open its session by design, and an unclaimed
    # warm session's expiry is pinned in tests/test_prewarm_e2e.py.
    server = await make_server(time_scale=0.1, prewarm=False)
    with Logs(caplog) as logs:
        async with aiohttp.ClientSession() as session:
            params = webhook_params("CA" + "5" * 32, "AC" + "1" * 32, "+15005550001", "+1500")
            async with session.post(server.url + "/twilio/voice", data=params) as resp:
                twiml = parse_twiml(await resp.text())
            ws = await session.ws_connect(twiml.stream_url)
            started = time.monotonic()
            await ws.send_json({"event": "connected", "protocol": "Call", "version": "1.0.0"})
            msg = await ws.receive(timeout=5.0)
            waited = time.monotonic() - started
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert ws.close_code == 1008
    assert msg.extra == "protocol error: no 'start' within 1 s"
    assert 0.9 <= waited < 2.0, waited
    assert logs.count("no 'start' within 1 s") == 1, logs.lines
    assert logs.errors == [], logs.errors
    assert server.emulator.sessions_total == 0
    assert len(server.calls) == 0
