"""``LiveConnection``: resumption handles, consumed-message index, drops, failures, handover.

A scripted stand-in for ``client.aio.live.connect`` (no sockets): each connection serves the
raw server messages queued for it; the real SDK against the emulator is covered end to end in
``test_call_control_e2e.py`` and ``test_emulator_limits_e2e.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from google.genai.types import LiveConnectConfig, LiveServerMessage
from websockets.frames import Close

from pipelines.gemini import connection as conn_mod
from pipelines.gemini.connection import LiveConnection, backoff_secs

pytestmark = pytest.mark.unit


class FakeWs:
    """What ``genai_session`` reads: ``recv(decode=False)``, ``send``, ``close``."""

    def __init__(self, script: list[Any]) -> None:
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        for item in script:
            self.inbox.put_nowait(item)
        self.sent: list[str] = []

    async def recv(self, decode: bool = True) -> bytes:
        item = await self.inbox.get()
        if isinstance(item, BaseException):
            raise item
        return json.dumps(item).encode()

    async def send(self, text: str) -> None:
        self.sent.append(text)

    async def close(self) -> None:
        self.inbox.put_nowait(websockets.ConnectionClosedOK(Close(1000, ""), Close(1000, ""), True))


class FakeSession:
    def __init__(self, ws: FakeWs) -> None:
        self._ws = ws

    async def close(self) -> None:
        await self._ws.close()


def closed(code: int | None, reason: str = "") -> websockets.ConnectionClosed:
    return websockets.ConnectionClosedError(Close(code, reason) if code else None, None)


class FakeClient:
    """``client.aio.live.connect``: one script per connection; an exception refuses it."""

    vertexai = False

    def __init__(self, *scripts: list[Any] | BaseException) -> None:
        self.scripts = list(scripts)
        self.configs: list[LiveConnectConfig] = []
        self.aio = self
        self.live = self

    @contextlib.asynccontextmanager
    async def connect(self, *, model: str, config: LiveConnectConfig) -> AsyncIterator[Any]:
        self.configs.append(config)
        script = self.scripts.pop(0) if self.scripts else [asyncio.CancelledError()]
        if isinstance(script, BaseException):
            raise script
        yield FakeSession(FakeWs(script))


class Events:
    def __init__(self) -> None:
        self.ready: list[bool] = []
        self.messages: list[LiveServerMessage] = []
        self.failed: list[tuple[int | None, str]] = []
        self.done = asyncio.Event()

    async def on_ready(self, resumed: bool) -> None:
        self.ready.append(resumed)

    async def on_message(self, message: LiveServerMessage) -> None:
        self.messages.append(message)

    async def on_failed(self, code: int | None, reason: str) -> None:
        self.failed.append((code, reason))
        self.done.set()


def make(client: FakeClient, events: Events, **kwargs: Any) -> LiveConnection:
    return LiveConnection(
        client,  # type: ignore[arg-type]
        "models/gemini-3.8-live",
        LiveConnectConfig(),
        on_ready=events.on_ready,
        on_message=events.on_message,
        on_failed=events.on_failed,
        **kwargs,
    )


def update(handle: str, resumable: bool = True, index: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"newHandle": handle, "resumable": resumable}
    if index is not None:
        body["lastConsumedClientMessageIndex"] = str(index)
    return {"sessionResumptionUpdate": body}


async def until(predicate: Any, secs: float = 2.0) -> None:
    async with asyncio.timeout(secs):
        while not predicate():  # noqa: ASYNC110 (test polling)
            await asyncio.sleep(0.005)


async def test_a_drop_resumes_with_the_newest_resumable_handle() -> None:
    client = FakeClient(
        [update("h1", index=4), update("h2", resumable=False), closed(None)],
        [update("h3", index=9), closed(None)],
    )
    events = Events()
    live = make(client, events, time_scale=0.0)  # no futile-resume window
    live.start()
    await until(lambda: len(client.configs) == 3)  # the third connect ends the test
    await live.close()

    handles = [c.session_resumption.handle for c in client.configs if c.session_resumption]
    assert handles == [None, "h1", "h3"]
    assert events.ready[:2] == [False, True]
    assert live.last_consumed_index == 9
    assert len(events.messages) == 3  # every message reached the service, updates included
    assert events.failed == []


async def test_a_resumed_connection_that_ends_at_once_starts_a_fresh_session() -> None:
    client = FakeClient([update("h1"), closed(None)], [update("h2"), closed(None)])
    events = Events()
    live = make(client, events)  # the resumed connection drops well within 3 s
    live.start()
    await until(lambda: len(client.configs) == 3)
    await live.close()
    handles = [c.session_resumption.handle for c in client.configs if c.session_resumption]
    assert handles == [None, "h1", None]
    assert events.ready[:3] == [False, True, False]  # the service re-seeds the fresh session


async def test_permanent_close_fails_at_once() -> None:
    client = FakeClient([closed(1008, "policy")], [])
    events = Events()
    live = make(client, events)
    live.start()
    await asyncio.wait_for(events.done.wait(), 2.0)
    await live.close()
    assert events.failed == [(1008, "policy")]
    assert len(client.configs) == 1


async def test_refused_setup_fails_at_once() -> None:
    from google.genai.errors import APIError

    client = FakeClient(APIError(1007, {"message": "bad setup"}))
    events = Events()
    live = make(client, events)
    live.start()
    await asyncio.wait_for(events.done.wait(), 2.0)
    await live.close()
    assert [code for code, _ in events.failed] == [1007]
    assert events.ready == []


async def test_repeated_drops_fail_the_call_after_the_budget(monkeypatch) -> None:
    monkeypatch.setattr(conn_mod, "backoff_secs", lambda n: 0.0)
    drops = [[closed(1011, "internal")] for _ in range(conn_mod.MAX_CONSECUTIVE_FAILURES + 2)]
    client = FakeClient(*drops)
    events = Events()
    live = make(client, events)
    live.start()
    await asyncio.wait_for(events.done.wait(), 2.0)
    await live.close()
    assert len(client.configs) == conn_mod.MAX_CONSECUTIVE_FAILURES
    [(code, reason)] = events.failed
    assert code == 1011 and "connection lost" in reason


def test_backoff_is_immediate_first_then_bounded_and_jittered() -> None:
    rng = random.Random(1)
    assert backoff_secs(1, rng) == 0.0
    waits = [backoff_secs(n, rng) for n in range(2, 12)]
    assert all(0 < w <= conn_mod.BACKOFF_MAX_SECS for w in waits)
    assert len(set(waits)) == len(waits)  # jittered


async def test_goaway_hands_over_when_quiet_and_keeps_an_ending_call() -> None:
    client = FakeClient([update("h1"), {"goAway": {"timeLeft": "5s"}}], [])
    events = Events()
    live = make(client, events)
    live.start()
    await until(lambda: len(client.configs) == 2)
    await live.close()
    handover = client.configs[1].session_resumption
    assert handover is not None and handover.handle == "h1"
    assert events.ready == [False, True] and events.failed == []

    ending = FakeClient([update("h1"), {"goAway": {"timeLeft": "0.2s"}}], [])
    events = Events()
    live = make(ending, events, can_hand_over=lambda: False, time_scale=0.01)
    live.start()
    await asyncio.sleep(0.4)
    await live.close()
    assert len(ending.configs) == 1  # the call was ending: it kept its connection


async def test_raw_sends_count_messages_for_resending() -> None:
    client = FakeClient([update("h1")])
    events = Events()
    live = make(client, events)
    live.start()
    await until(lambda: live.session is not None)
    assert await live.send_json('{"realtime_input": {}}')
    assert await live.send_json('{"realtime_input": {}}')
    assert live.sent == 2
    await live.close()
    assert not await live.send_json("{}")  # closed: nothing is sent
