"""The post-call webhook over real sockets: a call's record reaches a flaky receiver, signed.

The receivers are small aiohttp apps on loopback. The whole-call test runs the real server,
SDK and Pipecat against the emulator with a persona whose ``post_call_webhook`` points at a
receiver that answers 503 twice before it accepts; the others drive ``PostCallSender``
directly to pin what is not retried and how ``Retry-After`` is honoured.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from loguru import logger

from bot.app_keys import POST_CALL
from bot.metrics import METRICS
from bot.post_call import (
    CALL_SID_HEADER,
    IDEMPOTENCY_HEADER,
    Delivery,
    PostCallSender,
)
from bot.records.record import summarise_call
from bot.webhook_signature import SIGNATURE_HEADER, verify
from pipelines.ports import TranscriptTurn
from sim.caller import CallPlan
from sim.emulator import EmulatorConfig
from sim.emulator.config import SHORT_REPLY_WAV
from sim.testing import wait_until

pytestmark = pytest.mark.e2e

SECRET = "whsec-e2e-4c1f0d2b9a"
PERSONAS = Path(__file__).parent / "personas"


@dataclass
class Receiver:
    """What the receiver saw: one entry per request (headers, body, when, what it answered)."""

    url: str
    hits: list[dict[str, Any]] = field(default_factory=list)


@contextlib.asynccontextmanager
async def receiver(
    answer: Callable[[int], web.Response], on_hit: Callable[[], Any] | None = None
) -> AsyncIterator[Receiver]:
    """A loopback receiver; ``answer(n)`` makes the reply to the ``n``-th request (1-based)."""
    seen = Receiver("")

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        reply = answer(len(seen.hits) + 1)
        seen.hits.append(
            {
                "headers": dict(request.headers),
                "body": body,
                "at": time.monotonic(),
                "status": reply.status,
                "context": on_hit() if on_hit else None,
            }
        )
        return reply

    app = web.Application()
    app.router.add_post("/hooks/calls", hook)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    seen.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hooks/calls"
    try:
        yield seen
    finally:
        await runner.cleanup()


async def test_a_calls_record_reaches_a_flaky_receiver_signed_once_it_accepts(
    make_emulator, make_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("E2E_HOOK_SECRET", SECRET)
    server_box: list[Any] = []

    def flaky(n: int) -> web.Response:
        return web.Response(status=503, text="busy") if n <= 2 else web.json_response({"ok": 1})

    # At each attempt: how many calls the server still holds (0: the call was not kept open).
    async with receiver(flaky, on_hit=lambda: len(server_box[0].calls)) as hooks:
        personas = tmp_path / "personas"
        personas.mkdir()
        (personas / "frontdesk.yaml").write_text(
            (PERSONAS / "frontdesk.yaml").read_text()
            + f"post_call_webhook:\n  url: {hooks.url}\n  secret_env: E2E_HOOK_SECRET\n"
            "  timeout_secs: 2\n  max_attempts: 4\n"
        )
        # time_scale 0.1: the backoff starts at 0.1 s instead of 1 s. The greeting's length
        # plays no part: the emulator greets with its 2.06 s short reply, not the 3.9 s one.
        emu = await make_emulator(EmulatorConfig(think_ms=300, greeting_wav=SHORT_REPLY_WAV))
        server = await make_server(emulator=emu, personas=personas, time_scale=0.1)
        server_box.append(server)
        sender = server.app[POST_CALL]
        started = time.monotonic()
        result = await server.call(CallPlan().wait_for_greeting().hangup(), from_="+15551230123")
        call_secs = time.monotonic() - started
        assert result.ok, result.failure
        assert await wait_until(lambda: sender.stats()["delivered"] == 1, 5), sender.stats()

    stats = sender.stats()
    assert stats["attempts"] == 3 and stats["retries"] == 2, stats
    assert stats["failed"] == stats["dropped"] == stats["lost"] == 0, stats
    assert [h["status"] for h in hooks.hits] == [503, 503, 200]
    assert call_secs < 8, call_secs  # the greeting and a hang-up: nothing waited for the hook
    assert [h["context"] for h in hooks.hits] == [0, 0, 0]  # the call was over before each try
    # Every attempt is the same delivery (one idempotency key, one body), signed afresh.
    keys = {h["headers"][IDEMPOTENCY_HEADER] for h in hooks.hits}
    assert len(keys) == 1 and len({h["body"] for h in hooks.hits}) == 1
    assert [h["headers"]["X-Voicebot-Attempt"] for h in hooks.hits] == ["1", "2", "3"]
    waits = [b["at"] - a["at"] for a, b in zip(hooks.hits, hooks.hits[1:], strict=False)]
    assert 0.05 <= waits[0] < 1.0 and 0.1 <= waits[1] < 1.5, waits  # 0.1 s, then 0.2 s, jittered

    accepted = hooks.hits[-1]
    body, headers = accepted["body"], accepted["headers"]
    assert verify(SECRET.encode(), body, headers[SIGNATURE_HEADER])
    assert not verify(b"not the secret", body, headers[SIGNATURE_HEADER])
    assert headers[CALL_SID_HEADER] == result.call_sid
    assert headers["Content-Type"] == "application/json"
    record = json.loads(body)
    assert record["event"] == "call.ended" and record["id"] == keys.pop()
    call = record["call"]
    assert call["call_sid"] == result.call_sid and call["persona"] == "frontdesk"
    assert call["end_reason"] == "caller hung up" and call["failed"] is False
    assert call["caller"] == "+1******0123"  # masked as the records are
    assert 2 < call["duration_secs"] < 10
    turns = record["transcript"]
    assert turns and turns[0]["speaker"] == "bot", turns
    assert turns[0]["text"].startswith("[bot audio"), turns  # the emulator's greeting label

    metrics = server.app[METRICS].registry
    labels = {"persona": "frontdesk", "outcome": "delivered"}
    assert metrics.get_sample_value("voicebot_post_call_webhooks_total", labels) == 1.0


def _delivery(url: str, sid: str = "CA400", attempts: int = 5) -> Delivery:
    summary = summarise_call(
        call_sid=sid, stream_sid="MZ1", persona="frontdesk", caller="+15551230123",
        called="+15005550006", duration_secs=3.0, end_reason="caller hung up",
    )  # fmt: skip
    summary = dataclasses.replace(summary, turns=(TranscriptTurn("caller", "my PIN is 4321", 1.0),))
    return Delivery(sid, "frontdesk", url, SECRET.encode(), 2.0, attempts, summary, True)


async def test_a_400_is_not_retried_and_one_warning_names_the_call_not_the_body() -> None:
    lines: list[str] = []
    sink = logger.add(lines.append, level="WARNING", format="{level} {message}")
    sender = PostCallSender(lambda _: SECRET, retry_first_secs=0.01)
    try:
        async with receiver(lambda n: web.Response(status=400, text="bad")) as hooks:
            sender.start()
            sender.submit(_delivery(hooks.url))
            assert await sender.flushed(5), sender.stats()
    finally:
        await sender.stop()
        logger.remove(sink)
    stats = sender.stats()
    assert len(hooks.hits) == 1 and stats["attempts"] == 1 and stats["retries"] == 0, stats
    assert stats["failed"] == 1 and stats["delivered"] == 0, stats
    (line,) = [x for x in lines if "post-call" in x]
    assert line.startswith("WARNING call CA400: post-call webhook to 127.0.0.1 failed"), line
    assert "HTTP 400" in line and "not retried" in line
    assert "PIN" not in line and "0123" not in line and "/hooks/calls" not in line


async def test_retry_after_is_honoured_and_a_dead_receiver_fails_after_max_attempts() -> None:
    sender = PostCallSender(lambda _: SECRET, retry_first_secs=0.01, retry_max_secs=0.02)

    def slow_down(n: int) -> web.Response:
        if n == 1:
            return web.Response(status=429, headers={"Retry-After": "1"})
        return web.Response(status=204)

    try:
        async with receiver(slow_down) as hooks:
            sender.start()
            sender.submit(_delivery(hooks.url, "CA429"))
            # Nothing listens on the port the receiver had once it is gone (connection refused).
            assert await sender.flushed(5), sender.stats()
        sender.submit(_delivery(hooks.url, "CADEAD", attempts=3))
        assert await sender.flushed(5), sender.stats()
    finally:
        await sender.stop()
    assert [h["status"] for h in hooks.hits] == [429, 204]
    assert hooks.hits[1]["at"] - hooks.hits[0]["at"] >= 0.95  # Retry-After: 1, not 0.01 s
    stats = sender.stats()
    assert stats["delivered"] == 1 and stats["failed"] == 1, stats
    assert stats["attempts"] == 2 + 3, stats  # the dead receiver: every attempt, then failed
