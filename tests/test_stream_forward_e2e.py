"""A stream landing on another process is relayed to the process that admitted its call.

Two real servers in-process (same ``TWILIO_AUTH_TOKEN`` and ``PUBLIC_URL``, each with its own
peer URL), one emulator, Twilio played by :class:`SignedTwilio`: the webhook goes to one
server, the media upgrade to the other, as a round-robin load balancer may send them. The
behaviour across real processes behind HAProxy is ``tests/test_scale_out_e2e.py``.
"""

from __future__ import annotations

import socket

import aiohttp
import pytest

from bot.app_keys import FORWARDER
from sim.caller.hand_stream import SignedTwilio
from sim.caller.twilio_webhook import new_sid
from sim.testing import RunningServer, wait_until

pytestmark = pytest.mark.e2e

TOKEN = "test-auth-token"
PUBLIC = "https://bot.example.com"


async def _pair(make_server, make_emulator, **settings) -> tuple[RunningServer, RunningServer]:
    emulator = await make_emulator()
    a = await make_server(emulator=emulator, **settings)
    b = await make_server(emulator=emulator, **settings)
    for server in (a, b):
        server.app[FORWARDER].set_self_url(server.url)
    return a, b


async def test_a_stream_on_the_other_process_is_served_by_the_owner_and_replays_refused(
    make_server, make_emulator
):
    a, b = await _pair(
        make_server, make_emulator, twilio_auth_token=TOKEN, public_url=PUBLIC, max_calls=1
    )
    async with aiohttp.ClientSession() as session:
        to_a = SignedTwilio(session, a.url, PUBLIC, TOKEN)
        to_b = SignedTwilio(session, b.url, PUBLIC, TOKEN)
        sid = new_sid("CA")
        twiml = await to_a.webhook(sid)  # A admits the call (its only line)
        call = await to_b.run_stream(
            await to_b.upgrade(twiml), sid, twiml.parameters, talk_secs=5, until_heard=True
        )
        relays = b.app[FORWARDER].stats
        assert await wait_until(lambda: relays.active == 0, 2.0)  # the relay ends with the call
        # The same captured TwiML and upgrade, once through each process.
        replay_b = await to_b.run_stream(
            await to_b.upgrade(twiml), sid, twiml.parameters, talk_secs=1
        )
        replay_a = await to_a.run_stream(
            await to_a.upgrade(twiml), sid, twiml.parameters, talk_secs=1
        )

    assert call.bot_media > 0  # the greeting came back through the relay
    for replay in (replay_a, replay_b):  # the owner's ledger refused both; the code came through
        assert (replay.close_code, replay.bot_media) == (1008, 0), replay
        assert replay.close_reason.startswith("call token replay")
    assert a.calls.totals["started"] == 1 and a.calls.max_live == 1
    assert b.calls.totals["started"] == 0 and b.calls.max_live == 0  # a relay is no call
    assert (relays.totals["relayed"], relays.max_active) == (2, 1)
    assert a.emulator.sessions_total == 1


async def test_an_unreachable_owner_or_a_peer_off_the_allow_list_closes_the_stream(
    make_server, make_emulator
):
    a, b = await _pair(make_server, make_emulator, twilio_auth_token=TOKEN, public_url=PUBLIC)
    guarded = await make_server(
        emulator=a.emulator, twilio_auth_token=TOKEN, public_url=PUBLIC,
        peer_networks="10.0.0.0/8",
    )  # fmt: skip
    with socket.socket() as s:  # a port nobody listens on: the owner's pod is gone
        s.bind(("127.0.0.1", 0))
        gone_url = f"http://127.0.0.1:{s.getsockname()[1]}"
    async with aiohttp.ClientSession() as session:
        to_a = SignedTwilio(session, a.url, PUBLIC, TOKEN)
        to_b = SignedTwilio(session, b.url, PUBLIC, TOKEN)
        to_guarded = SignedTwilio(session, guarded.url, PUBLIC, TOKEN)
        sid = new_sid("CA")
        twiml = await to_a.webhook(sid)
        # 127.0.0.1 is not in 10.0.0.0/8: never dialled.
        off_list = await to_guarded.run_stream(
            await to_guarded.upgrade(twiml), sid, twiml.parameters, talk_secs=1
        )
        a.app[FORWARDER].set_self_url(gone_url)
        lost_sid = new_sid("CA")
        lost_twiml = await to_a.webhook(lost_sid)
        lost = await to_b.run_stream(
            await to_b.upgrade(lost_twiml), lost_sid, lost_twiml.parameters, talk_secs=1
        )

    assert (off_list.close_code, off_list.close_reason) == (
        1013,
        "call owner outside VOICEBOT_PEER_NETWORKS",
    )
    assert guarded.app[FORWARDER].stats.totals["not_allowed"] == 1
    assert (lost.close_code, lost.close_reason, lost.bot_media) == (
        1013,
        "call owner unreachable",
        0,
    )
    assert b.app[FORWARDER].stats.totals["owner_unreachable"] == 1
    assert b.app[FORWARDER].stats.totals["relayed"] == 0
    assert a.emulator.sessions_total == 0


async def test_unsigned_loopback_development_routes_too(make_server, make_emulator):
    # No auth token: each process signs with its own random key; one public URL (the LB's).
    a, b = await _pair(make_server, make_emulator, public_url=PUBLIC)
    async with aiohttp.ClientSession() as session:
        to_a = SignedTwilio(session, a.url, PUBLIC, "unused")
        to_b = SignedTwilio(session, b.url, PUBLIC, "unused")
        sid = new_sid("CA")
        twiml = await to_a.webhook(sid)
        call = await to_b.run_stream(
            await to_b.upgrade(twiml), sid, twiml.parameters, talk_secs=5, until_heard=True
        )
    assert call.bot_media > 0
    assert a.calls.totals["started"] == 1 and b.calls.totals["started"] == 0
    assert b.app[FORWARDER].stats.totals["relayed"] == 1
