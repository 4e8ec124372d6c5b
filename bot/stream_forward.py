"""Relaying a media stream to the process that admitted its call (issue 16: any process).

Behind a round-robin load balancer a call's webhook and its media stream may reach different
processes. The webhook's process keeps the call: its admission reservation and the single-use
ledger entry of its ``call_token`` live there, and its peer URL is signed into the token
(``bot.peers``). A process whose ``/twilio/media`` receives a ``start`` whose verified token
names another peer does not serve it: :class:`StreamForwarder` opens a WebSocket to
``<peer>/twilio/media``, replays the ``connected`` and ``start`` messages it read, and then
copies messages both ways until one side closes, passing the close code and reason on. The
owner checks everything again (upgrade signature, token signature, expiry, single use,
parameters), so a replay is refused by the owner wherever it lands. The relayed upgrade
carries Twilio's ``X-Twilio-Signature`` and ``Host`` as received and ``X-Voicebot-Relay``: a
relayed stream is never relayed again.

Costs and limits: one relay hop for the streams that land elsewhere (about (N-1)/N of them
with N processes), one message held at a time per direction (aiohttp's writer waits for the
socket to drain once its buffer is full, and nothing is read meanwhile); a relay is counted as
a relay (``/stats`` ``relays``, ``voicebot_stream_relays*``), not as a call, and takes no
admission slot. An owner that cannot be reached closes the stream with 1013 and a counted
``owner_unreachable``; Twilio then plays the TwiML apology.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web
from loguru import logger
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bot.calls import WRAP_UP_SECS
from bot.peers import PeerRouter, Refuse, media_url, parse_peer_networks
from bot.settings import Settings
from bot.twilio_security import Authenticator

RELAY_HEADER = "X-Voicebot-Relay"
# Request headers the owner needs to check the upgrade as Twilio made it.
_PASSED_HEADERS = ("X-Twilio-Signature", "User-Agent")
CLOSE_TRY_AGAIN = 1013
CLOSE_INTERNAL = 1011
# How long to wait for the owner's TCP connect and WebSocket handshake (real time: a pod that
# is gone does not answer; Twilio's caller hears silence meanwhile).
CONNECT_TIMEOUT_SECS = 3.0
# When writing to the owner fails, how long its close frame (a refusal's code) may take to come.
OWNER_CLOSE_WAIT_SECS = 1.0
MAX_MESSAGE_BYTES = 16 * 1024  # as bot.media_stream: the owner refuses bigger ones anyway
OUTCOMES = ("relayed", "owner_unreachable", "owner_refused", "loop", "bad_peer", "not_allowed")
_DOC_ACTIVE = "Media streams this process relays to the process that admitted their call."
_DOC_TOTAL = "Streams that named another process, by outcome (relayed or why not)."


def sendable_close(code: int | None, reason: bytes, lost: bytes) -> tuple[int, bytes]:
    """A close code and reason that may be sent on a WebSocket (RFC 6455 section 7.4).

    1005, 1006 and 1015 are never sent on the wire, and a code outside the defined ranges is
    no code: both become 1011 with ``lost`` as the reason (when the reason is empty).
    """
    if code is not None and (1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999):
        return code, reason[:123]
    return CLOSE_INTERNAL, (reason or lost)[:123]


class RelayStats:
    """Relays of this process: live now, most at once, and totals by outcome."""

    def __init__(self) -> None:
        self.active = 0
        self.max_active = 0
        self.totals: Counter[str] = Counter({k: 0 for k in OUTCOMES})
        self._idle = asyncio.Event()
        self._idle.set()

    def started(self) -> None:
        """A relay began."""
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        self._idle.clear()

    def ended(self) -> None:
        """A relay ended."""
        self.active -= 1
        if self.active == 0:
            self._idle.set()

    async def wait_idle(self, timeout_secs: float) -> bool:
        """Wait until no relay is live (True) or ``timeout_secs`` pass (False)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_secs)
        return self.active == 0

    def snapshot(self) -> dict[str, Any]:
        """For ``/stats``: ``{"active", "max_active", <outcome>: count, ...}``."""
        return {"active": self.active, "max_active": self.max_active, **self.totals}


class RelayCollector(Collector):
    """:class:`RelayStats` as Prometheus metrics, read at scrape time."""

    def __init__(self, stats: RelayStats) -> None:
        """Export ``stats``."""
        self._stats = stats

    def describe(self) -> Iterable[Metric]:
        """The metric families, without samples."""
        return [
            GaugeMetricFamily("voicebot_stream_relays_active", _DOC_ACTIVE),
            CounterMetricFamily("voicebot_stream_relays", _DOC_TOTAL, labels=["outcome"]),
        ]

    def collect(self) -> Iterable[Metric]:
        """The current figures."""
        yield GaugeMetricFamily("voicebot_stream_relays_active", _DOC_ACTIVE, self._stats.active)
        total = CounterMetricFamily("voicebot_stream_relays", _DOC_TOTAL, labels=["outcome"])
        for outcome in OUTCOMES:
            total.add_metric([outcome], self._stats.totals[outcome])
        yield total


class StreamForwarder:
    """Relays streams whose ``call_token`` names another process (see the module doc).

    Args:
        auth: The process's authenticator (token checks, this process's peer URL).
        router: Where a stream goes, from the peer its token names.
    """

    def __init__(self, auth: Authenticator, router: PeerRouter) -> None:
        self.auth = auth
        self.router = router
        self.stats = RelayStats()
        self.session: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(cls, settings: Settings, auth: Authenticator) -> StreamForwarder:
        """The forwarder for ``VOICEBOT_PEER_URL`` and ``VOICEBOT_PEER_NETWORKS``."""
        return cls(auth, PeerRouter(auth.peer_url, parse_peer_networks(settings.peer_networks)))

    def set_self_url(self, peer_url: str) -> None:
        """This process's peer URL, once known (``voicebot serve``: its loopback address)."""
        self.auth.peer_url = peer_url
        self.router = PeerRouter(peer_url, self.router.networks)

    async def take(
        self,
        request: web.Request,
        ws: web.WebSocketResponse,
        call_sid: str,
        params: dict[str, str],
        sent: list[str],
    ) -> bool:
        """Relay or refuse the stream if another process keeps its call; False: serve here.

        Args:
            request: The media upgrade.
            ws: The prepared WebSocket, ``start`` read.
            call_sid: ``start.callSid``.
            params: ``start.customParameters``.
            sent: The raw ``connected`` and ``start`` messages read so far, replayed in order.
        """
        peer, verified = self.auth.stream_owner(request, call_sid, params)
        relayed = RELAY_HEADER in request.headers
        decision = self.router.decide(peer, verified=verified, relayed=relayed)
        if decision is None:
            return False
        if not re.fullmatch(r"[A-Za-z0-9]{1,64}", call_sid):
            call_sid = "(malformed callSid)"  # for the log lines only; the owner checks it
        if isinstance(decision, Refuse):
            self.stats.totals[decision.cause] += 1
            logger.warning(f"call {call_sid} stream refused: {decision.reason}")
            await ws.close(code=CLOSE_TRY_AGAIN, message=decision.reason.encode()[:123])
            return True
        await self._relay(request, ws, decision.peer_url, call_sid, sent)
        return True

    async def _relay(
        self,
        request: web.Request,
        ws: web.WebSocketResponse,
        peer_url: str,
        call_sid: str,
        sent: list[str],
    ) -> None:
        assert self.session is not None, "StreamForwarder used outside the app's lifetime"
        headers = {h: request.headers[h] for h in _PASSED_HEADERS if h in request.headers}
        headers["Host"] = request.host  # the owner rebuilds the signed URL from it
        headers[RELAY_HEADER] = self.router.self_url or "1"
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_SECS):
                upstream = await self.session.ws_connect(
                    media_url(peer_url),
                    headers=headers,
                    autoping=True,
                    compress=0,
                    max_msg_size=MAX_MESSAGE_BYTES,
                )
        except aiohttp.WSServerHandshakeError as e:
            self.stats.totals["owner_refused"] += 1
            logger.warning(
                f"call {call_sid} relay refused by its owner {peer_url}: HTTP {e.status}"
            )
            await ws.close(
                code=CLOSE_INTERNAL, message=f"call owner answered HTTP {e.status}".encode()
            )
            return
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            self.stats.totals["owner_unreachable"] += 1
            logger.warning(
                f"call {call_sid} relay failed: its owner {peer_url} is unreachable "
                f"({type(e).__name__})"
            )
            await ws.close(code=CLOSE_TRY_AGAIN, message=b"call owner unreachable")
            return
        self.stats.totals["relayed"] += 1
        self.stats.started()
        started = time.monotonic()
        logger.info(f"call {call_sid} relayed to its owner {peer_url}")
        how = "?"
        try:
            for text in sent:
                await upstream.send_str(text)
            how = await _splice(ws, upstream)
        except (aiohttp.ClientError, ConnectionError) as e:
            how = f"relay error {type(e).__name__}"
            await upstream.close(code=1001, message=b"relay error")
            await ws.close(code=CLOSE_INTERNAL, message=b"relay error")
        except asyncio.CancelledError:
            how = "cancelled"
            await upstream.close(code=1001, message=b"relay shutting down")
            raise
        finally:
            self.stats.ended()
            if not upstream.closed:
                await upstream.close()
            logger.info(
                f"call {call_sid} relay ended after {time.monotonic() - started:.1f} s: {how}"
            )


async def _pump(
    src: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    dst: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
) -> tuple[int | None, bytes]:
    """Copy messages from ``src`` to ``dst`` until ``src`` closes; its close code and reason.

    One message at a time: nothing more is read from ``src`` while ``dst`` cannot take it.
    """
    while True:
        msg = await src.receive()
        if msg.type == WSMsgType.TEXT:
            await dst.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await dst.send_bytes(msg.data)
        elif msg.type == WSMsgType.CLOSE:
            return msg.data, (msg.extra or "").encode()
        elif msg.type in (WSMsgType.CLOSING, WSMsgType.CLOSED):
            return src.close_code, b""
        elif msg.type == WSMsgType.ERROR:
            return src.close_code or CLOSE_INTERNAL, str(msg.data)[:100].encode()


async def _splice(caller: web.WebSocketResponse, owner: aiohttp.ClientWebSocketResponse) -> str:
    """Copy both ways until one side closes; pass its close on to the other; how it ended."""
    up = asyncio.create_task(_pump(caller, owner), name="relay:up")
    down = asyncio.create_task(_pump(owner, caller), name="relay:down")
    try:
        await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        if up.done() and up.exception() is not None and not down.done():
            # Writing to the owner failed: it is closing the socket, and its close frame says
            # why (a refused replay: 1008). Under load the caller's next frame can meet the
            # closed socket before that frame is read; the caller is owed the owner's code.
            await asyncio.wait({down}, timeout=OWNER_CLOSE_WAIT_SECS)
        if down.done() and down.exception() is None:
            first = down
        else:
            first = up if up.done() else down
        code, reason = first.result()
        if first is down:
            code, reason = sendable_close(code, reason, b"call owner connection lost")
            await caller.close(code=code, message=reason)
            how = f"owner closed {code}"
        else:
            code, reason = sendable_close(code, reason, b"caller connection lost")
            await owner.close(code=code, message=reason)
            how = f"caller closed {code}"
        other = up if first is down else down
        with contextlib.suppress(TimeoutError, aiohttp.ClientError, ConnectionError):
            await asyncio.wait_for(other, 5.0)
        return how
    finally:
        for task in (up, down):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


def add_stream_forwarding(app: web.Application, forwarder: StreamForwarder) -> None:
    """Give ``forwarder`` an HTTP session for the app's lifetime; let relays end at shutdown.

    At shutdown (after this process's own drain), live relays get up to ``WRAP_UP_SECS`` to
    end with their calls, then are closed 1001: their calls belong to processes that go on.
    """

    async def session(app: web.Application) -> AsyncIterator[None]:
        # No connection limit: each relay holds one connection for its call's length.
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        forwarder.session = aiohttp.ClientSession(connector=connector)
        try:
            yield
        finally:
            await forwarder.session.close()

    async def let_relays_end(app: web.Application) -> None:
        if forwarder.stats.active:
            logger.info(f"shutting down: waiting for {forwarder.stats.active} relayed call(s)")
            await forwarder.stats.wait_idle(WRAP_UP_SECS)

    app.cleanup_ctx.append(session)
    app.on_shutdown.append(let_relays_end)
