"""Peer URLs, routing decisions and the relay's edge cases (``bot.peers``, ``bot.stream_forward``).

The relay tests run a real relay handler and a scripted owner on loopback (aiohttp only): close
codes and reasons, an owner that drops, binary frames, and the headers the owner needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web

from bot.call_tokens import CallTokenCodec, derive_key, unverified_peer
from bot.peers import (
    PeerRouter,
    Refuse,
    Relay,
    default_peer_url,
    media_url,
    normalize_peer_url,
    parse_peer_networks,
)
from bot.settings import Settings, SettingsError
from bot.stream_forward import RELAY_HEADER, StreamForwarder, _splice, sendable_close
from bot.twilio_security import Authenticator

pytestmark = pytest.mark.unit

TOKEN = "auth-token"
PUBLIC = "https://bot.example.com"
SID = "CA" + "b" * 32
STREAM = "wss://bot.example.com/twilio/media"


# --- peer URLs and settings -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("http://10.0.0.5:8080", "http://10.0.0.5:8080"),
        ("HTTP://Pod-1.Voicebot:8080/", "http://pod-1.voicebot:8080"),
        ("https://[FD00::5]:8443", "https://[fd00::5]:8443"),
        ("http://127.0.0.1", "http://127.0.0.1"),
    ],
)
def test_peer_urls_are_normalised_for_signing_and_comparing(given: str, normal: str) -> None:
    assert normalize_peer_url(given) == normal


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ("10.0.0.5:8080", "expected http://HOST:PORT"),
        ("ftp://10.0.0.5", "expected http://HOST:PORT"),
        ("http://10.0.0.5:8080/twilio/media", "no path"),
        ("http://user:pw@10.0.0.5:8080", "no user, query or fragment"),
        ("http://10.0.0.5:99999", "expected http://HOST:PORT"),
    ],
)
def test_a_bad_peer_url_says_what_was_expected(given: str, said: str) -> None:
    with pytest.raises(ValueError, match=said) as info:
        normalize_peer_url(given)
    assert repr(given) in str(info.value) and "http://10.0.0.5:8080" in str(info.value)


def test_settings_read_the_peer_url_and_networks_and_name_the_variable_on_errors() -> None:
    s = Settings.from_env(
        {"VOICEBOT_PEER_URL": "http://10.0.0.5:8080/", "VOICEBOT_PEER_NETWORKS": "10.0.0.0/8"}
    )
    assert (s.peer_url, s.peer_networks) == ("http://10.0.0.5:8080", "10.0.0.0/8")
    assert Settings.from_env({}).peer_url is None
    with pytest.raises(SettingsError, match=r"^VOICEBOT_PEER_URL: .*'10\.0\.0\.5'"):
        Settings.from_env({"VOICEBOT_PEER_URL": "10.0.0.5"})
    with pytest.raises(SettingsError, match=r"^VOICEBOT_PEER_NETWORKS: .*'10\.0\.0\.300/8'"):
        Settings.from_env({"VOICEBOT_PEER_NETWORKS": "10.0.0.0/8, 10.0.0.300/8"})


def test_networks_default_peer_and_media_url() -> None:
    assert [str(n) for n in parse_peer_networks("10.0.0.0/8, fd00::/8 192.168.1.7")] == [
        "10.0.0.0/8",
        "fd00::/8",
        "192.168.1.7/32",
    ]
    assert parse_peer_networks("") == ()
    assert default_peer_url("127.0.0.1", 8080) == "http://127.0.0.1:8080"
    assert default_peer_url("::1", 8080) == "http://[::1]:8080"
    assert default_peer_url("0.0.0.0", 8080) is None  # a wildcard names no address
    assert default_peer_url("10.0.0.5", 8080) is None  # beyond loopback: the operator says
    assert media_url("https://10.0.0.5:8443") == "wss://10.0.0.5:8443/twilio/media"


# --- the token names its peer --------------------------------------------------------------


def test_a_grant_carries_its_peer_and_old_grants_name_none() -> None:
    codec = CallTokenCodec(derive_key(TOKEN))
    common: dict[str, Any] = {
        "call_sid": SID, "stream_url": STREAM, "persona": "p", "caller": "", "called": ""
    }  # fmt: skip
    with_peer = codec.issue(**common, peer="http://10.0.0.5:8080")
    assert codec.verify(with_peer, call_sid=SID, stream_url=STREAM).peer == "http://10.0.0.5:8080"
    without = codec.issue(**common)
    assert codec.verify(without, call_sid=SID, stream_url=STREAM).peer == ""
    assert unverified_peer(with_peer) == "http://10.0.0.5:8080"
    for junk in ("", "!!!", "e30.x", "bnVsbA.x"):  # not base64, {}, null
        assert unverified_peer(junk) == ""


# --- the routing decision ------------------------------------------------------------------


def test_the_router_serves_its_own_relays_others_and_never_twice() -> None:
    router = PeerRouter("http://10.0.0.5:8080")
    assert router.decide("", verified=True, relayed=False) is None  # no peer: served here
    assert router.decide("HTTP://10.0.0.5:8080/", verified=True, relayed=False) is None
    assert router.decide("http://10.0.0.6:8080", verified=True, relayed=False) == Relay(
        "http://10.0.0.6:8080"
    )
    loop = router.decide("http://10.0.0.6:8080", verified=True, relayed=True)
    assert isinstance(loop, Refuse) and loop.cause == "loop"
    assert router.decide("http://10.0.0.5:8080", verified=True, relayed=True) is None
    bad = router.decide("not a url", verified=True, relayed=False)
    assert isinstance(bad, Refuse) and bad.cause == "bad_peer"


def test_the_allow_list_and_unverified_tokens_limit_what_is_dialled() -> None:
    router = PeerRouter("http://10.0.0.5:8080", parse_peer_networks("10.0.0.0/8"))
    assert router.decide("http://10.9.9.9:8080", verified=True, relayed=False) == Relay(
        "http://10.9.9.9:8080"
    )
    for outside in ("http://169.254.169.254", "http://pod-2.voicebot:8080", "http://[::1]:80"):
        refused = router.decide(outside, verified=True, relayed=False)
        assert isinstance(refused, Refuse) and refused.cause == "not_allowed", outside
    # Unsigned development: an unverified peer is dialled only on loopback.
    dev = PeerRouter("http://127.0.0.1:8080")
    assert dev.decide("http://127.0.0.1:8081", verified=False, relayed=False) == Relay(
        "http://127.0.0.1:8081"
    )
    assert dev.decide("http://169.254.169.254", verified=False, relayed=False) is None
    assert dev.decide("http://localhost:8081", verified=False, relayed=False) is None


def test_close_codes_that_cannot_be_sent_become_1011() -> None:
    assert sendable_close(1000, b"", b"lost") == (1000, b"")
    assert sendable_close(4000, b"bye", b"lost") == (4000, b"bye")
    assert sendable_close(1008, b"x" * 200, b"lost") == (1008, b"x" * 123)
    for reserved in (None, 1005, 1006, 1015, 999, 5000):
        assert sendable_close(reserved, b"", b"lost") == (1011, b"lost")


# --- the relay against a scripted owner ----------------------------------------------------


class Owner:
    """A scripted owner process: records what it gets, then acts as the ``start`` says."""

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.received: list[Any] = []
        self.close_code: int | None = None
        self.closed = asyncio.Event()

    async def media(self, request: web.Request) -> web.WebSocketResponse:
        self.headers = dict(request.headers)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            self.received.append(msg.data)
            data = msg.data if msg.type == aiohttp.WSMsgType.BINARY else json.loads(msg.data)
            act = data.get("act") if isinstance(data, dict) else None
            if act == "close":
                await ws.close(code=4000, message=b"owner says bye")
            elif act == "drop":
                assert request.transport is not None
                request.transport.abort()
            elif isinstance(data, bytes) or act == "echo":
                await (ws.send_bytes(data) if isinstance(data, bytes) else ws.send_str(msg.data))
        self.close_code = ws.close_code
        self.closed.set()
        return ws


@contextlib.asynccontextmanager
async def _served(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def _relay_and_owner() -> AsyncIterator[tuple[str, Owner, StreamForwarder, str]]:
    """(relay URL, owner, the relay's forwarder, a token naming the owner)."""
    owner = Owner()
    owner_app = web.Application()
    owner_app.router.add_get("/twilio/media", owner.media)
    settings = Settings(twilio_auth_token=TOKEN, public_url=PUBLIC)
    async with _served(owner_app) as owner_url:
        forwarder = StreamForwarder(Authenticator(settings), PeerRouter("http://127.0.0.1:1"))
        issuer = Authenticator(settings)
        issuer.peer_url = owner_url
        token = issuer.issue_call_token(
            call_sid=SID, stream_url=STREAM, persona="p", caller="", called="", custom={}
        )

        async def media(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            msg = await ws.receive()
            params = json.loads(msg.data)["start"]["customParameters"]
            assert await forwarder.take(request, ws, SID, params, [msg.data])
            return ws

        relay_app = web.Application()
        relay_app.router.add_get("/twilio/media", media)
        async with aiohttp.ClientSession() as session, _served(relay_app) as relay_url:
            forwarder.session = session
            yield relay_url, owner, forwarder, token


def _start(token: str) -> str:
    return json.dumps(
        {"event": "start", "start": {"callSid": SID, "streamSid": "MZ1",
                                     "customParameters": {"call_token": token}}}
    )  # fmt: skip


async def test_the_owner_gets_the_start_and_headers_and_its_close_reaches_the_caller() -> None:
    async with _relay_and_owner() as (relay_url, owner, forwarder, token):
        async with aiohttp.ClientSession() as client:
            ws = await client.ws_connect(
                relay_url + "/twilio/media", headers={"X-Twilio-Signature": "sig"}
            )
            await ws.send_str(_start(token))
            await ws.send_bytes(b"\x00\x01binary")
            await ws.send_str(json.dumps({"act": "echo", "n": 1}))
            got = [await ws.receive(timeout=2), await ws.receive(timeout=2)]
            await ws.send_str(json.dumps({"act": "close"}))
            closing = await ws.receive(timeout=2)
    assert [m.data for m in got] == [b"\x00\x01binary", json.dumps({"act": "echo", "n": 1})]
    assert (closing.type, closing.data, closing.extra) == (
        aiohttp.WSMsgType.CLOSE,
        4000,
        "owner says bye",
    )
    assert json.loads(owner.received[0])["start"]["customParameters"]["call_token"] == token
    assert owner.headers["X-Twilio-Signature"] == "sig"
    assert owner.headers["Host"] == relay_url.removeprefix("http://")  # as the caller sent it
    assert RELAY_HEADER in owner.headers
    assert (forwarder.stats.totals["relayed"], forwarder.stats.active) == (1, 0)


async def test_a_caller_close_reaches_the_owner_and_an_owner_drop_gives_1011() -> None:
    async with _relay_and_owner() as (relay_url, owner, forwarder, token):
        async with aiohttp.ClientSession() as client:
            ws = await client.ws_connect(relay_url + "/twilio/media")
            await ws.send_str(_start(token))
            await ws.close(code=4001, message=b"caller bye")
            await asyncio.wait_for(owner.closed.wait(), 2)
            assert owner.close_code == 4001
            owner.closed.clear()
            ws = await client.ws_connect(relay_url + "/twilio/media")
            await ws.send_str(_start(token))
            await ws.send_str(json.dumps({"act": "drop"}))
            dropped = await ws.receive(timeout=3)
    assert (dropped.type, dropped.data, dropped.extra) == (
        aiohttp.WSMsgType.CLOSE,
        1011,
        "call owner connection lost",
    )
    assert forwarder.stats.totals["relayed"] == 2
    assert await forwarder.stats.wait_idle(2)


class _ScriptedEnd:
    """One end of a relayed stream for ``_splice``: scripted receives, failing or kept sends."""

    def __init__(self, receives: list[tuple[float, aiohttp.WSMessage]], fail: Exception | None):
        self.receives = receives
        self.fail = fail
        self.sent: list[Any] = []
        self.close_code: int | None = None
        self.closed_with: tuple[int, bytes] | None = None

    async def receive(self) -> aiohttp.WSMessage:
        if not self.receives:
            await asyncio.Event().wait()  # nothing more from this side
        delay, msg = self.receives.pop(0)
        await asyncio.sleep(delay)
        return msg

    async def send_str(self, data: Any) -> None:
        if self.fail is not None:
            raise self.fail
        self.sent.append(data)

    send_bytes = send_str

    async def close(self, *, code: int, message: bytes = b"") -> bool:
        self.closed_with = (code, message)
        return True


async def test_an_owner_refusal_reaches_the_caller_even_when_a_frame_meets_its_closed_socket():
    # The owner refuses a replayed stream: it closes 1008 right after `start`. Under load the
    # caller's next media frame was written to the owner's already closed socket before the
    # relay read the owner's close frame: the caller got 1011 "relay error" instead of 1008.
    media = aiohttp.WSMessage(aiohttp.WSMsgType.TEXT, '{"event":"media"}', None)
    refusal = aiohttp.WSMessage(aiohttp.WSMsgType.CLOSE, 1008, "replayed stream")
    caller = _ScriptedEnd([(0.0, media)], fail=None)
    gone = aiohttp.ClientConnectionResetError("Cannot write to closing transport")
    owner = _ScriptedEnd([(0.05, refusal)], fail=gone)

    how = await _splice(cast(Any, caller), cast(Any, owner))

    assert how == "owner closed 1008"
    assert caller.closed_with == (1008, b"replayed stream")
