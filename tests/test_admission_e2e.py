"""Quota-aware admission end to end: the emulator's concurrent-session quota, the real server.

Six callers against a quota of 3: the first three are served; the fourth, admitted while the
limit was still unknown, is the one refusal the server learns the limit from; the fifth and
sixth hear the busy TwiML at the webhook and never get a stream. After the back-off a probe
call finds a raised quota.
"""

from __future__ import annotations

import asyncio

import pytest

from bot.session_quota import BACKOFF_SECS
from bot.twilio_routes import BUSY
from sim.caller import CallPlan, place_call
from sim.emulator import EmulatorConfig, FaultPlan
from sim.emulator.config import SHORT_REPLY_WAV
from sim.emulator.protocol import QUOTA_EXCEEDED
from sim.testing import wait_until

pytestmark = pytest.mark.e2e

# The server's timers (here the quota back-off, 30 s) run at a fifth; audio stays real time.
# Not less: the model watchdog scales too, and at a tenth it reconnects a greeting that is
# 0.8 s late, which a loaded 2-core machine (8 test workers) made happen.
SCALE = 0.2
# A short greeting: these tests are about who is let in, not about what they hear.
SHORT = SHORT_REPLY_WAV


def _quota_closes(emulator) -> list[tuple[str, int, str]]:
    return [c for c in emulator.closes if c[2] == QUOTA_EXCEEDED]


async def test_callers_over_the_quota_get_the_busy_twiml_after_one_refusal(
    make_emulator, make_server
):
    emu = await make_emulator(
        EmulatorConfig(think_ms=300, greeting_wav=SHORT), FaultPlan(max_sessions=3)
    )
    server = await make_server(emulator=emu, time_scale=SCALE)
    # The served callers stay on (at most 30 s) until the probe below is done with them.
    release = asyncio.Event()
    long_plan = CallPlan().wait_for_greeting().pause(30, until=release).hangup()
    served = []
    for i in range(3):  # a setup (400 ms) apart: calls set up two at a time (the setup gate),
        # and this test's time scale makes the watchdog impatient with a queued greeting.
        served.append(asyncio.create_task(place_call(server.url, long_plan), name=f"served-{i}"))
        await asyncio.sleep(0.45)
    assert await wait_until(lambda: emu.active_sessions == 3, 10.0)

    # Callers 4-6, one after another (each webhook after the previous call ended).
    fourth = await place_call(server.url, CallPlan().wait_for_greeting().hangup())
    fifth = await place_call(server.url, CallPlan().wait_for_greeting().hangup())
    sixth = await place_call(server.url, CallPlan().wait_for_greeting().hangup())

    # The fourth got a stream that failed: the one refusal the limit is learned from.
    assert not fourth.ok and "1011" in (fourth.failure or ""), fourth.failure
    assert len(_quota_closes(emu)) == 1
    assert server.calls.quota.limit == 3
    # The fifth and sixth heard the busy TwiML at the webhook: no stream, no refusal.
    for late in (fifth, sixth):
        assert late.stream_sid == "", late.events
        assert BUSY in late.end_reason, late.end_reason
    assert server.calls.totals["refused_quota"] == 2
    assert emu.sessions_total == 3

    # The quota is raised; after the back-off one probe call is let through, and served.
    emu.faults.max_sessions = 4
    await asyncio.sleep(BACKOFF_SECS * SCALE + 0.2)
    probe = await place_call(server.url, CallPlan().wait_for_greeting().hangup())
    assert probe.ok, probe.failure
    assert probe.greeting_ms is not None
    assert len(_quota_closes(emu)) == 1
    assert server.calls.quota.limit == 4

    release.set()
    for result in await asyncio.gather(*served):
        assert result.ok, result.failure
        assert result.greeting_ms is not None
        assert "caller hung up" in result.end_reason, result.end_reason


async def test_a_configured_limit_turns_callers_away_before_any_refusal(make_emulator, make_server):
    emu = await make_emulator(
        EmulatorConfig(think_ms=300, greeting_wav=SHORT), FaultPlan(max_sessions=3)
    )
    server = await make_server(emulator=emu, gemini_max_sessions=2)
    # The first two calls last past the last webhook (0.9 s) on their greetings alone.
    plan = CallPlan().wait_for_greeting().hangup()
    results = []
    tasks = []
    for i in range(4):
        tasks.append(asyncio.create_task(place_call(server.url, plan), name=f"caller-{i}"))
        await asyncio.sleep(0.3)  # webhooks in order; the first two hold their places
    results = await asyncio.gather(*tasks)

    assert [r.ok for r in results] == [True, True, False, False], [r.failure for r in results]
    for late in results[2:]:
        assert BUSY in late.end_reason and late.stream_sid == "", late.end_reason
    assert _quota_closes(emu) == []
    assert emu.sessions_total == 2
