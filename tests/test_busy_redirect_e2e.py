"""A full process passes a call's webhook on (``<Redirect>`` to itself) before it says busy.

Behind a load balancer the retried webhook lands on another process (``tests/
test_scale_out_e2e.py``); here one real server (``TWILIO_AUTH_TOKEN`` and ``PUBLIC_URL`` set)
is full, so every hop comes back to it: ``?busy_hops=N`` counts them, the other query
parameters are kept, each retry is signed over its full URL like any webhook, and after
``VOICEBOT_BUSY_REDIRECTS`` hops the caller hears the persona's busy TwiML. The simulated
caller and the fake Twilio API (an outbound call) follow the ``<Redirect>``s as Twilio does.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from bot.server import ServeOptions
from bot.settings import Settings
from bot.workers import make_plan
from sim.caller import CallPlan, place_call
from sim.caller.twilio_webhook import new_sid, twilio_signature, webhook_params
from sim.testing import free_port
from sim.twilio_api import running_twilio_api
from tests.test_outbound_e2e import PERSON, dial, network, start

pytestmark = pytest.mark.e2e

TOKEN = "busy-redirect-token"


async def _full_server(make_server, **settings):
    port = free_port()
    server = await make_server(
        port=port, twilio_auth_token=TOKEN, public_url=f"http://127.0.0.1:{port}",
        max_calls=1, prewarm=False, **settings,
    )  # fmt: skip
    assert server.calls.reserve("CA-holding-the-only-line")  # full until its TTL (15 s)
    return server


async def _webhook(session: aiohttp.ClientSession, url: str, sid: str) -> tuple[int, str]:
    params = webhook_params(sid, "AC" + "0" * 32, "+15005550001", "+15005550006")
    headers = {"X-Twilio-Signature": twilio_signature(TOKEN, url, params)}
    async with session.post(url, data=params, headers=headers) as resp:
        return resp.status, await resp.text()


async def _stats(session: aiohttp.ClientSession, ops_url: str) -> dict:
    async with session.get(f"{ops_url}/stats") as resp:
        return dict(await resp.json())


async def test_a_full_process_redirects_with_a_hop_count_then_says_busy(make_server):
    server = await _full_server(make_server, busy_redirects=2)
    sid = new_sid("CA")
    url = f"{server.url}/twilio/voice?persona=announcer&campaign=spring"
    async with aiohttp.ClientSession() as session:
        hops = []
        for _ in range(2):
            status, body = await _webhook(session, url, sid)
            assert status == 200, body
            redirect = ET.fromstring(body).find("Redirect")
            assert redirect is not None and redirect.get("method") == "POST", body
            url = (redirect.text or "").strip()
            hops.append(url)
        status, last = await _webhook(session, url, sid)
        stats = await _stats(session, server.ops_url)
        async with session.get(f"{server.ops_url}/metrics") as resp:
            metrics = await resp.text()

    for n, hop in enumerate(hops, 1):
        parts = urlsplit(hop)
        assert (parts.scheme, parts.netloc, parts.path) == ("http", urlsplit(server.url).netloc,
                                                            "/twilio/voice")  # fmt: skip
        query = parse_qs(parts.query)
        assert query == {"persona": ["announcer"], "campaign": ["spring"], "busy_hops": [str(n)]}
    root = ET.fromstring(last)
    assert status == 200 and root.find("Redirect") is None, last
    assert [el.tag for el in root] == ["Say", "Hangup"]  # the busy TwiML, after the last hop
    assert stats["admission"]["redirected"] == 2
    assert stats["admission"]["refused_full"] == 1
    assert 'voicebot_webhook_redirects_total{cause="capacity"} 2.0' in metrics
    assert 'voicebot_calls_refused_total{cause="capacity"} 1.0' in metrics


async def test_the_simulated_caller_follows_the_redirects_and_hears_busy(make_server):
    server = await _full_server(make_server, busy_redirects=3)
    res = await place_call(server.url, CallPlan().pause(1).hangup(), auth_token=TOKEN)
    assert not res.ok and (res.failure or "").startswith("rejected"), res.failure
    assert res.redirects == 3
    assert res.twiml_say  # the busy words
    assert [e.kind for e in res.events].count("webhook") == 4


async def test_without_redirects_or_for_the_project_quota_the_webhook_says_busy_at_once(
    make_server,
):
    alone = await _full_server(make_server)  # the default: one process, no redirect
    res = await place_call(alone.url, CallPlan().pause(1).hangup(), auth_token=TOKEN)
    assert (res.failure or "").startswith("rejected") and res.redirects == 0

    # A quota learned from Gemini is the project's, shared by every process: no retry.
    quota = await _full_server(make_server, busy_redirects=2)
    quota.calls.max_calls = 5
    quota.calls.quota.learned = 1
    res = await place_call(quota.url, CallPlan().pause(1).hangup(), auth_token=TOKEN)
    assert (res.failure or "").startswith("rejected") and res.redirects == 0
    assert quota.calls.totals["refused_quota"] == 1 and quota.calls.totals["redirected"] == 0


async def test_a_malformed_hop_count_is_a_clear_400(make_server):
    server = await _full_server(make_server, busy_redirects=2)
    async with aiohttp.ClientSession() as session:
        status, body = await _webhook(session, f"{server.url}/twilio/voice?busy_hops=x", "CA1")
    assert status == 400 and "busy_hops" in body and "'x'" in body, body


def test_busy_redirects_default_to_workers_minus_one_unless_set():
    options = ServeOptions(port=8080)
    plan = make_plan(3, Settings(), options, False, None)
    assert plan.worker_settings(0).busy_redirects == 2
    plan = make_plan(3, Settings(busy_redirects=1), options, False, None)
    assert plan.worker_settings(2).busy_redirects == 1
    assert Settings.from_env({"VOICEBOT_BUSY_REDIRECTS": "2"}).busy_redirects == 2


async def test_the_fake_twilio_api_follows_the_redirects_of_an_outbound_call(
    make_server, tmp_path: Path
):
    async with running_twilio_api(network()) as api:
        server = await start(make_server, api, tmp_path, max_calls=1, busy_redirects=2)
        assert server.calls.reserve("CA-holding-the-only-line")
        status, placed = await dial(server, {"to": PERSON, "persona": "front"})
        assert status == 201, placed
        assert await api.wait_all_ended(20)
    call = api.calls[placed["sid"]]
    hops = [parse_qs(urlsplit(u).query).get("busy_hops") for u in call.webhook_urls]
    assert hops == [None, ["1"], ["2"]], call.webhook_urls
    assert call.answered_by == "human" and call.stream is None
    assert len(call.said) == 1 and call.said[0].text  # the busy words, then <Hangup/>
    assert server.calls.totals["redirected"] == 2 and server.calls.totals["refused_full"] == 1
