"""Issue 14 "Done when": ``/metrics`` is scraped on the operations listener during a real call.

The real server, the real SDK and Pipecat over loopback, the emulator and the simulated
caller: the caller talks over the greeting, hears the reply to what they said and hangs up. Scrapes
taken while the call runs must show it live (one active call, one more started, the first
reply timed, audio seconds growing, tokens counted); after it, it must be ended with its reason
and its barge-in counted with a ``clear`` latency.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sim.caller import CallPlan, place_call
from sim.testing import wait_until

pytestmark = pytest.mark.e2e

OPS_TOKEN = "ops-metrics-token"


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def _total(samples: dict, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


async def _scrape(http: aiohttp.ClientSession, url: str) -> dict:
    headers = {"Authorization": f"Bearer {OPS_TOKEN}"}
    async with http.get(f"{url}/metrics", headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/plain")
        return _samples(await resp.text())


async def test_metrics_move_as_a_call_with_a_barge_in_goes(make_server):
    server = await make_server(ops_token=OPS_TOKEN)
    # The caller talks over the greeting (a barge-in), then hears the reply to what they said.
    plan = CallPlan().barge_in(after_bot_audio_secs=1.0).pause(2.5).hangup()
    async with aiohttp.ClientSession() as http:
        # Unauthenticated scrapes are refused like every ops request.
        async with http.get(f"{server.ops_url}/metrics") as resp:
            assert resp.status == 401
        async with http.get(f"{server.url}/metrics") as resp:
            assert resp.status == 404  # never on the public listener
        before = await _scrape(http, server.ops_url)
        call = asyncio.create_task(place_call(server.url, plan))
        during: list[dict] = []

        async def live_with_reply() -> bool:
            snap = await _scrape(http, server.ops_url)
            if _total(snap, "voicebot_calls_active") == 1:
                during.append(snap)
            return bool(during) and (
                _total(during[-1], "voicebot_response_latency_seconds_count") >= 1
            )

        for _ in range(150):  # scrape every 0.1 s while the call runs (15 s at most)
            if call.done() or await live_with_reply():
                break
            await asyncio.sleep(0.1)
        result = await call
        assert result.ok, result.failure
        assert await wait_until(lambda: len(server.calls) == 0, timeout_secs=5)
        after = await _scrape(http, server.ops_url)

    # While the call ran.
    assert len(during) >= 2, "the call was never seen live on /metrics"
    first, last = during[0], during[-1]
    started = _total(first, "voicebot_calls_started_total")
    assert started == _total(before, "voicebot_calls_started_total") + 1
    assert _total(first, "voicebot_calls_active", persona="frontdesk") == 1
    assert _total(last, "voicebot_setup_latency_seconds_count") == 1
    assert _total(last, "voicebot_first_audio_latency_seconds_count") == 1
    assert _total(last, "voicebot_response_latency_seconds_count") >= 1
    # The reply came within the emulator's think time plus the VAD's and pacing's share.
    assert 0 < _total(last, "voicebot_response_latency_seconds_sum") < 3.0
    for stream in ("caller_in", "bot_out", "model_in"):
        grew = _total(last, "voicebot_audio_seconds_total", stream=stream) - _total(
            first, "voicebot_audio_seconds_total", stream=stream
        )
        assert grew > 0, stream
    # A turnComplete carried usageMetadata: audio tokens both ways.
    assert _total(last, "voicebot_model_tokens_total", kind="prompt") > 0
    assert _total(last, "voicebot_model_tokens_total", kind="response", modality="audio") > 0
    assert _total(last, "voicebot_model_cost_usd_total", persona="frontdesk") > 0
    assert _total(last, "voicebot_event_loop_lag_seconds_count") > 0

    # After the end.
    assert _total(after, "voicebot_calls_active") == 0
    ended = _total(
        after, "voicebot_calls_ended_total", persona="frontdesk", reason="caller_hung_up"
    )
    assert ended == _total(before, "voicebot_calls_ended_total", reason="caller_hung_up") + 1
    assert _total(after, "voicebot_barge_ins_total", persona="frontdesk") == 1
    assert _total(after, "voicebot_barge_in_clear_seconds_count") == 1
    # Detection -> clear is this process's own work: milliseconds, not the caller's turn.
    assert _total(after, "voicebot_barge_in_clear_seconds_sum") < 0.2
    assert _total(after, "voicebot_barge_in_clear_seconds_bucket", le="0.2") == 1
    assert result.bargeins == 1 and result.clears == 1
    assert _total(after, "voicebot_bridge_latency_seconds_count", way="in") > 0
    assert _total(after, "voicebot_calls_refused_total") == 0
