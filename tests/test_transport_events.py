"""Unit tests for the transport's own event registry (public ``event_handler`` API on top)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web
from loguru import logger

from pipelines.twilio.transport import EVENTS, AiohttpWebsocketTransport
from pipelines.twilio.transport_client import AiohttpWebsocketParams

pytestmark = pytest.mark.unit


def make_transport() -> AiohttpWebsocketTransport:
    # The socket is never used: only the event plumbing is exercised.
    return AiohttpWebsocketTransport(web.WebSocketResponse(), AiohttpWebsocketParams())


async def test_handlers_get_the_transport_and_args_in_a_task_of_their_own() -> None:
    transport = make_transport()
    calls: list[tuple[Any, ...]] = []
    release = asyncio.Event()

    @transport.event_handler("on_mark")
    async def slow(t: Any, name: str, played: bool) -> None:
        await release.wait()
        calls.append(("async", t, name, played))

    transport.add_event_handler("on_mark", lambda t, name, played: calls.append(("sync", name)))
    await transport.notify("on_mark", "reply-1", True)
    assert calls == []  # notify does not run handlers inline (a handler may cancel the caller)
    await asyncio.sleep(0)
    assert calls == [("sync", "reply-1")]
    cleanup = asyncio.create_task(transport.cleanup())
    await asyncio.sleep(0.01)
    assert not cleanup.done()  # cleanup waits for handlers still running
    release.set()
    await cleanup
    assert calls[-1] == ("async", transport, "reply-1", True)


async def test_a_failing_handler_is_logged_and_the_others_still_run() -> None:
    transport = make_transport()
    seen: list[str] = []

    async def boom(_t: Any, _secs: float) -> None:
        raise RuntimeError("handler bug")

    transport.add_event_handler("on_media_timeout", boom)
    transport.add_event_handler("on_media_timeout", lambda _t, _secs: seen.append("ok"))
    lines: list[str] = []
    sink = logger.add(lines.append, level="ERROR", format="{message}")
    try:
        await transport.notify("on_media_timeout", 5.0)
        await transport.cleanup()
    finally:
        logger.remove(sink)
    assert seen == ["ok"]
    assert len(lines) == 1 and "on_media_timeout" in lines[0] and "handler bug" in lines[0]


async def test_removed_handlers_are_not_called_and_unfired_events_are_quiet() -> None:
    transport = make_transport()
    seen: list[str] = []

    def handler(_t: Any, _ws: Any) -> None:
        seen.append("called")

    transport.add_event_handler("on_client_connected", handler)
    transport.remove_event_handler("on_client_connected", handler)
    transport.remove_event_handler("on_client_connected", handler)  # twice: no-op
    for event in EVENTS:
        await transport.notify(event, None)
    await transport.cleanup()
    assert seen == []


def test_an_unknown_event_name_is_refused_with_the_known_ones() -> None:
    transport = make_transport()
    with pytest.raises(ValueError, match=r"no event 'on_connected'.*'on_client_connected'"):
        transport.add_event_handler("on_connected", lambda *_: None)
