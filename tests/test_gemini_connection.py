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
from pipelines.gemini import handover, reconnect
from pipelines.gemini.connection import LiveConnection
from pipelines.gemini.reconnect import backoff_secs

pytestmark = [pytest.mark.unit, pytest.mark.timed]  # real timers: runs with the calls


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

    async def send_realtime_input(self, **kwargs: Any) -> None:
        self._ws.sent.append(json.dumps({"realtime": sorted(kwargs)}))

    async def send_client_content(self, **kwargs: Any) -> None:
        texts = [p.text for t in kwargs.get("turns") or () for p in t.parts]
        self._ws.sent.append(json.dumps({"content": texts, "done": kwargs.get("turn_complete")}))


def closed(code: int | None, reason: str = "") -> websockets.ConnectionClosed:
    return websockets.ConnectionClosedError(Close(code, reason) if code else None, None)


class FakeClient:
    """``client.aio.live.connect``: one script per connection; an exception refuses it."""

    vertexai = False

    def __init__(self, *scripts: list[Any] | BaseException) -> None:
        self.scripts = list(scripts)
        self.configs: list[LiveConnectConfig] = []
        self.sockets: list[FakeWs] = []
        self.aio = self
        self.live = self

    @contextlib.asynccontextmanager
    async def connect(self, *, model: str, config: LiveConnectConfig) -> AsyncIterator[Any]:
        self.configs.append(config)
        script = self.scripts.pop(0) if self.scripts else [asyncio.CancelledError()]
        if isinstance(script, BaseException):
            raise script
        ws = FakeWs(script)
        self.sockets.append(ws)
        yield FakeSession(ws)


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


async def test_a_drop_resumes_with_the_newest_resumable_handle(monkeypatch) -> None:
    monkeypatch.setattr(conn_mod, "FUTILE_RESUME_SECS", 0.0)
    client = FakeClient(
        [update("h1", index=4), update("h2", resumable=False), closed(None)],
        [update("h3", index=9), closed(None)],
    )
    events = Events()
    live = make(client, events)
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


async def test_repeated_drops_go_on_within_the_time_budget_then_fail(monkeypatch) -> None:
    # Not a count: drops in a row go on being repaired until the budget is spent.
    monkeypatch.setattr(reconnect, "backoff_secs", lambda n: 0.02)
    monkeypatch.setattr(reconnect, "RECONNECT_BUDGET_SECS", 0.5)
    client = FakeClient(*[[update(f"h{n}"), closed(1011, "internal")] for n in range(200)])
    events = Events()
    live = make(client, events)
    live.start()
    await asyncio.wait_for(events.done.wait(), 3.0)
    await live.close()
    assert len(client.configs) > 5  # far more than the old count of 3
    [(code, reason)] = events.failed
    assert code == 1011 and "connection lost for" in reason


async def test_refused_reconnects_are_retried_within_the_budget(monkeypatch) -> None:
    from google.genai.errors import APIError

    monkeypatch.setattr(reconnect, "backoff_secs", lambda n: 0.01)
    unavailable = APIError(1011, {"message": "The service is currently unavailable."})
    client = FakeClient([update("h1"), closed(1011)], unavailable, unavailable, [update("h2")])
    events = Events()
    live = make(client, events)
    live.start()
    await until(lambda: len(client.configs) == 4 and live.connected.is_set())
    await live.close()
    assert events.failed == []
    assert events.ready == [False, True]  # resumed on the third attempt after the drop


async def test_a_stale_handle_refused_at_setup_starts_a_fresh_session(monkeypatch) -> None:
    from google.genai.errors import APIError

    monkeypatch.setattr(conn_mod, "FUTILE_RESUME_SECS", 0.0)
    stale = APIError(1008, {"message": "session not found"})
    client = FakeClient([update("h1"), closed(1011)], stale, [update("h2")])
    events = Events()
    live = make(client, events)
    live.start()
    await until(lambda: len(client.configs) == 3 and live.connected.is_set())
    await live.close()
    handles = [c.session_resumption.handle for c in client.configs if c.session_resumption]
    assert handles == [None, "h1", None]
    assert events.ready == [False, False] and events.failed == []


def test_backoff_is_immediate_first_then_bounded_and_jittered() -> None:
    rng = random.Random(1)
    assert backoff_secs(1, rng) == 0.0
    waits = [backoff_secs(n, rng) for n in range(2, 12)]
    assert all(0 < w <= reconnect.BACKOFF_MAX_SECS for w in waits)
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
    await until(lambda: live.connected.is_set())
    assert await live.send_json('{"realtime_input": {}}')
    assert await live.send_json('{"realtime_input": {}}')
    assert live.sent == 2
    await live.close()
    assert not await live.send_json("{}")  # closed: nothing is sent


# Re-sending what the resumed session lacks -----------------------------------------------


def audio(n: int) -> str:
    return json.dumps({"realtimeInput": {"audio": {"data": f"chunk{n}"}}})


def model_audio() -> dict[str, Any]:
    part = {"inlineData": {"data": "AAAA", "mimeType": "audio/pcm"}}
    return {"serverContent": {"modelTurn": {"parts": [part]}}}


async def deliver(ws: FakeWs, *items: Any) -> None:
    for item in items:
        ws.inbox.put_nowait(item)
    await until(lambda: ws.inbox.empty())
    await asyncio.sleep(0.01)


async def test_handover_resends_what_the_newest_handle_did_not_consume() -> None:
    # setup is message 0; the handle holding messages 1-2 leaves 3-4 to re-send, in order.
    client = FakeClient([update("h0", index=0)], [update("h9", index=0)])
    events = Events()
    live = make(client, events)
    live.start()
    await until(lambda: live.connected.is_set())
    for n in range(1, 5):
        assert await live.send_json(audio(n))
    await deliver(client.sockets[0], update("h1", index=2), {"goAway": {"timeLeft": "5s"}})
    await until(lambda: len(client.configs) == 2 and live.connected.is_set())
    assert await live.send_json(audio(5))  # live again: after the re-sent ones
    await live.close()
    assert client.configs[1].session_resumption.handle == "h1"
    assert client.sockets[1].sent == [audio(3), audio(4), audio(5)]
    assert live.sent == 3  # re-sent messages count on the new connection


async def test_input_during_an_outage_is_kept_and_sent_after_the_unconsumed(monkeypatch) -> None:
    monkeypatch.setattr(reconnect, "backoff_secs", lambda n: 0.2)  # a visible outage
    monkeypatch.setattr(reconnect, "GAP_SECS", 0.05)
    client = FakeClient([update("h0", index=0)], closed(1011), [update("h2")])
    events = Events()
    live = make(client, events)
    gaps: list[float] = []

    async def on_gap(secs: float) -> None:
        gaps.append(secs)

    live.on_gap = on_gap
    live.start()
    await until(lambda: live.connected.is_set())
    client.sockets[0].inbox.put_nowait(closed(1011))  # a drop, then a refused reconnect
    await until(lambda: not live.connected.is_set())
    assert live.reconnecting
    assert await live.send_json(audio(1))  # no socket: kept
    assert await live.send_json(audio(2))
    await until(lambda: len(client.configs) == 3 and live.connected.is_set())
    await live.close()
    assert client.sockets[-1].sent == [audio(1), audio(2)]
    assert len(gaps) == 1 and gaps[0] >= 0.05  # once per outage, with its length so far
    assert live.offline_since is None


async def test_answered_input_goes_as_a_context_note_not_as_audio_again() -> None:
    # The handle predates the question (it comes only after playback); the model finished
    # generating the answer: re-sending the question would have it answered twice.
    client = FakeClient([update("h0", index=0)], [update("h9", index=0)])
    events = Events()
    live = make(client, events)
    live.start()
    await until(lambda: live.connected.is_set())
    await live.send_json(audio(1))
    await live.send_json(audio(2))
    caller = {"serverContent": {"inputTranscription": {"text": "where is my order"}}}
    said = {"serverContent": {"outputTranscription": {"text": "It ships today."}}}
    await deliver(client.sockets[0], caller, model_audio(), said)
    await live.send_json(audio(3))  # the caller's next words, during the answer
    done = {"serverContent": {"generationComplete": True}}
    await deliver(client.sockets[0], done, {"goAway": {"timeLeft": "5s"}})
    await until(lambda: len(client.configs) == 2 and live.connected.is_set())
    await live.close()
    note = json.dumps({"content": ["where is my order", "It ships today."], "done": False})
    assert client.sockets[1].sent == [note, audio(3)]


async def test_goaway_waits_for_generation_not_playback_and_not_past_the_deadline(
    monkeypatch,
) -> None:
    monkeypatch.setattr(handover, "RESTART_WINDOW_SECS", -1.0)  # never restart (next test)
    client = FakeClient([update("h0", index=0)], [update("h1", index=0)], [update("h2")])
    events = Events()
    live = make(client, events)
    live.start()
    await until(lambda: live.connected.is_set())
    live.bot_quiet.clear()  # playback goes on throughout: it does not hold the handover
    await deliver(client.sockets[0], model_audio(), {"goAway": {"timeLeft": "5s"}})
    await asyncio.sleep(0.3)
    assert len(client.configs) == 1  # generating: no switch yet
    await deliver(client.sockets[0], {"serverContent": {"generationComplete": True}})
    await until(lambda: len(client.configs) == 2)
    await until(lambda: live.connected.is_set())
    # Generating until the deadline: the deadline (minus its margin) forces the switch.
    await live.send_json(audio(1))
    await deliver(client.sockets[1], model_audio(), {"goAway": {"timeLeft": "0.5s"}})
    await until(lambda: len(client.configs) == 3, secs=1.0)
    await until(lambda: live.connected.is_set())
    await live.close()
    assert client.sockets[2].sent == [audio(1)]  # not answered: the question again
    assert live.handovers == 2 and events.failed == []


async def test_a_short_goaway_just_after_an_answer_began_restarts_it_on_the_next() -> None:
    # 2 s left, the answer began just now: cut at the deadline it would be heard half and
    # then again; the next connection gives it whole and the old one's rest is not played.
    client = FakeClient([update("h0", index=0)], [update("h1", index=0)])
    events = Events()
    live = make(client, events)
    live.start()
    await until(lambda: live.connected.is_set())
    await live.send_json(audio(1))  # the question
    ws = client.sockets[0]
    await deliver(ws, model_audio(), {"goAway": {"timeLeft": "2s"}})
    await until(lambda: len(client.configs) == 2 and live.connected.is_set(), secs=1.0)
    played = len(events.messages)
    await live.close()
    assert client.sockets[1].sent == [audio(1)]  # answered again, whole, by the next one
    assert played == 4  # h0, the answer's first audio, the goAway (nothing after), then h1


async def test_the_end_of_a_caller_turn_hands_over_a_connection_that_cannot_last_an_answer(
    monkeypatch,
) -> None:
    monkeypatch.setattr(handover, "RESTART_WINDOW_SECS", -1.0)
    client = FakeClient([update("h0", index=0)], [update("h1", index=0)], [update("h2")])
    events = Events()
    live = make(client, events)
    live.start()
    await until(lambda: live.connected.is_set())
    # The first connection teaches: an answer takes ~0.3 s (+1 s slack), a connection lives
    # ~2.4 s (its switch is due 0.7 s before the end).
    ws = client.sockets[0]
    await deliver(ws, model_audio())
    await asyncio.sleep(0.3)
    await deliver(ws, {"serverContent": {"generationComplete": True}})
    await deliver(ws, {"goAway": {"timeLeft": "2s"}})
    await until(lambda: len(client.configs) == 2 and live.connected.is_set())
    live.caller_turn_ended()  # a fresh connection lasts an answer: stays
    await asyncio.sleep(0.1)
    assert len(client.configs) == 2
    await asyncio.sleep(0.5)
    await live.send_json(audio(1))
    live.caller_turn_ended()  # 0.6 s old: under 1.3 s left, the next connection answers
    await until(lambda: len(client.configs) == 3 and live.connected.is_set())
    await live.close()
    assert client.sockets[2].sent == [audio(1)]
    assert events.failed == []


def test_kept_input_is_bounded_and_a_fresh_session_gets_no_old_history() -> None:
    from pipelines.gemini import resend

    log = resend.ClientLog()
    chunk = "x" * 10_000
    for _ in range(resend.OFFLINE_MAX_CHARS // 10_000 + 20):
        log.queue_offline("json", chunk)
    kept = []
    while (entry := log.pop_offline()) is not None:
        kept.append(entry)
    assert sum(e.size for e in kept) <= resend.OFFLINE_MAX_CHARS
    assert log.dropped_chars > 0  # said so, once, in the log

    log.record("content", {"turns": [], "turn_complete": True})  # the seed
    log.record("json", audio(1))
    resent = log.take(resumed=False, notes=True)
    assert [e.payload for e in resent] == [audio(1)]  # the service re-seeds a fresh session


async def test_restart_resumes_on_a_new_connection_and_teaches_no_lifetime() -> None:
    client = FakeClient([update("h0", index=0)], [update("h1", index=0)])
    events = Events()
    live = make(client, events)
    live.start()
    await until(lambda: live.connected.is_set())
    await live.send_json(audio(1))
    assert live.restart()
    await until(lambda: len(client.configs) == 2 and live.connected.is_set())
    await live.close()
    assert client.configs[1].session_resumption.handle == "h0"
    assert client.sockets[1].sent == [audio(1)]
    assert live.plan.lifetime is None  # a restart is not the service's connection limit
    assert not live.restart()  # closed
