"""Pre-warming end to end: the webhook opens the call's Live API session, its stream takes it.

The real server, SDK and Pipecat against the emulator at its realistic setup time (400 ms), and
the simulated Twilio caller, which opens the stream a while after reading the TwiML.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from bot.app_keys import SETUP_GATE, WARM_SESSIONS
from bot.metrics import METRICS
from sim.caller import CallPlan, parse_twiml
from sim.caller.twilio_webhook import new_sid, voice_url, webhook_params
from sim.emulator import FaultPlan
from sim.testing import wait_until

pytestmark = pytest.mark.e2e


def _greeting_plan(connect_secs: float) -> CallPlan:
    """Twilio opens the stream ``connect_secs`` after the TwiML; the caller hangs up 1.2 s in."""
    plan = CallPlan(stream_connect_secs=connect_secs, hangup_after_secs=1.2)
    return plan.wait_for_greeting(timeout_secs=5, quiet_secs=0.2).hangup()


def _setup_latency_sum(app) -> float:  # type: ignore[no-untyped-def]
    """Seconds from stream start to Live API session ready, summed over the server's calls."""
    families = app[METRICS].registry.collect()
    return sum(
        s.value
        for f in families
        if f.name == "voicebot_setup_latency_seconds"
        for s in f.samples
        if s.name.endswith("_sum")
    )


async def _webhook(url: str) -> str:
    """POST an incoming-call webhook for a new CallSid; the TwiML's <Say> or stream URL."""
    params = webhook_params(new_sid("CA"), "AC" + "0" * 32, "+15005550001", "+15005550006")
    async with aiohttp.ClientSession() as http, http.post(voice_url(url), data=params) as r:
        assert r.status == 200
        twiml = parse_twiml(await r.text())
    return twiml.stream_url or f"say: {twiml.say_only}"


async def test_a_call_takes_the_session_its_webhook_opened(make_server) -> None:
    server = await make_server()
    emu = server.emulator
    wall0 = time.time()
    res = await server.call(_greeting_plan(connect_secs=0.6))
    assert res.ok, res.failure
    assert res.greeting_ms is not None and res.setup_ms is not None
    assert emu.sessions_total == 1  # one Live API session for the call, not one more
    (messages,) = emu.recordings.values()
    setup_at = next(m["t"] for m in messages if "setup" in m["msg"])
    stream_started_at = wall0 + res.setup_ms / 1000
    assert setup_at < stream_started_at - 0.3  # opened at the webhook, long before `start`
    # The greeting instruction went only after the stream was there (nothing said to nobody).
    first_content = next(m["t"] for m in messages if "client_content" in m["msg"])
    assert first_content > stream_started_at
    assert server.app[WARM_SESSIONS].counts == {"opened": 1, "ready": 1, "claimed": 1}
    # The stream found its session ready: no 400 ms setup after `start`.
    assert _setup_latency_sum(server.app) < 0.2


async def test_an_unclaimed_warm_session_expires_and_frees_its_place(make_server) -> None:
    # One call at a time; warm sessions expire after 10 s x 0.1.
    server = await make_server(max_calls=1, time_scale=0.1)
    warm = server.app[WARM_SESSIONS]
    first = await _webhook(server.url)
    assert first.startswith("ws://")
    assert await wait_until(lambda: server.emulator.active_sessions == 1, 2.0)
    assert server.calls.load() == 1  # the reservation, the warm session inside it: once
    assert (await _webhook(server.url)).startswith("say: ")  # full: the busy TwiML
    assert await wait_until(lambda: warm.counts["expired"] == 1, 3.0)
    assert await wait_until(lambda: server.emulator.active_sessions == 0, 2.0)
    assert server.calls.load() == 0 and len(warm) == 0
    assert (await _webhook(server.url)).startswith("ws://")  # the place is free again


async def test_a_warm_session_that_died_leaves_the_call_its_own(make_server, make_emulator) -> None:
    # The service closes the first session 50 ms after its setup, while it waits for the stream.
    emu = await make_emulator(faults=FaultPlan(close_after=0.05, close_sessions="1"))
    server = await make_server(emulator=emu)
    res = await server.call(_greeting_plan(connect_secs=0.5))
    assert res.ok, res.failure
    assert res.greeting_ms is not None  # the caller heard the greeting all the same
    assert emu.sessions_total == 2  # the warm one, then the call's own
    assert server.app[WARM_SESSIONS].counts["claimed"] == 1


async def test_prewarm_off_opens_the_session_at_the_stream(make_server) -> None:
    server = await make_server(prewarm=False)
    wall0 = time.time()
    res = await server.call(_greeting_plan(connect_secs=0.3))
    assert res.ok, res.failure
    (messages,) = server.emulator.recordings.values()
    setup_at = next(m["t"] for m in messages if "setup" in m["msg"])
    assert res.setup_ms is not None and setup_at > wall0 + res.setup_ms / 1000
    assert server.app[WARM_SESSIONS].counts == {}
    assert _setup_latency_sum(server.app) >= 0.4  # the emulator's setup, after `start`


async def test_a_warm_open_refused_for_quota_is_the_calls_one_refusal(
    make_server, make_emulator
) -> None:
    # A Gemini quota of one session, held by call A when B's webhook pre-opens: the refusal
    # (1011 quota) is B's answer. B's stream does not ask again: one refusal, the apology, and
    # admission learns the limit (tests/test_admission_e2e.py without pre-warming's help).
    emu = await make_emulator(faults=FaultPlan(max_sessions=1))
    server = await make_server(emulator=emu)
    warm = server.app[WARM_SESSIONS]
    a = asyncio.create_task(server.call(_greeting_plan(connect_secs=0.0)))
    assert await wait_until(lambda: emu.active_sessions == 1, 3.0)  # A's, set up
    b = await server.call(_greeting_plan(connect_secs=0.3))
    assert (await a).ok
    assert not b.ok and "1011" in (b.failure or ""), b.failure
    assert warm.counts["failed"] == 1 and warm.counts["claimed"] == 2
    assert len([c for c in emu.closes if "quota" in c[2]]) == 1
    assert server.calls.quota.limit == 1


async def test_a_burst_of_webhooks_opens_through_the_setup_gate(make_server) -> None:
    # More webhooks at once than the gate's width: their warm opens take turns through the
    # gate, so the service sees the setups in waves one setup time (400 ms) apart.
    server = await make_server()
    gate, warm = server.app[SETUP_GATE], server.app[WARM_SESSIONS]
    width = gate.concurrency
    count = width + 2
    streams = await asyncio.gather(*(_webhook(server.url) for _ in range(count)))
    assert all(s.startswith("ws://") for s in streams)
    assert await wait_until(lambda: warm.counts["ready"] == count, 5.0)
    assert gate.peak == width and gate.held == 0
    setups = sorted(
        next(m["t"] for m in messages if "setup" in m["msg"])
        for messages in server.emulator.recordings.values()
    )
    assert len(setups) == count
    # A setup beyond the width only once an earlier one was answered (400 ms).
    assert all(later - first >= 0.3 for first, later in zip(setups, setups[width:], strict=False))


async def test_a_stream_whose_warm_open_waits_for_the_gate_takes_it_over(make_server) -> None:
    # The gate is full (other calls setting up) when the webhook comes and still when the
    # stream starts: the call waits for its warm open's slot, and that one open is its session.
    server = await make_server()
    gate = server.app[SETUP_GATE]
    # Every place held, released only by this test (or 1 s on).
    held = [await gate.enter() for _ in range(gate.concurrency)]
    call = asyncio.create_task(server.call(_greeting_plan(connect_secs=0.1)))
    assert await wait_until(lambda: len(server.calls) == 1, 2.0)  # its stream is registered
    await asyncio.sleep(0.2)
    assert server.emulator.sessions_total == 0  # nothing opened while the gate was full
    for slot in held:
        slot.release()
    await asyncio.sleep(0.1)  # the open runs (400 ms): the call and its open hold one slot
    assert gate.held == 1
    res = await call
    assert res.ok, res.failure
    assert res.greeting_ms is not None
    assert server.emulator.sessions_total == 1  # the warm open only, never a second one
    assert server.app[WARM_SESSIONS].counts == {"opened": 1, "ready": 1, "claimed": 1}
    assert gate.held == 0
