"""Quota-aware admission, unit: the session limit configured, learned, relaxed; the wrap-up."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pipecat.frames.frames import BotStartedSpeakingFrame, BotStoppedSpeakingFrame

from bot.calls import CallRecord, CallRegistry
from bot.session_quota import BACKOFF_SECS, SessionQuota
from bot.settings import Settings, SettingsError
from pipelines.call.control import WRAP_UP_GOODBYE, CallControl
from pipelines.gemini.reconnect import is_quota_refusal
from pipelines.personas import load_personas

pytestmark = [pytest.mark.unit, pytest.mark.timed]  # real timers: runs with the calls

PERSONAS = load_personas(Path(__file__).parent / "personas")
QUOTA_REASON = "You exceeded your current quota, please check your plan and billing details."


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_quota_refusals_are_told_from_other_closes() -> None:
    assert is_quota_refusal(1011, QUOTA_REASON)
    assert is_quota_refusal(1011, "RESOURCE_EXHAUSTED: too many sessions")
    assert not is_quota_refusal(1011, "Internal error encountered.")
    assert not is_quota_refusal(1007, "Invalid JSON payload received. Unknown name quota_x")
    assert not is_quota_refusal(1000, "quota")


def test_no_limit_known_admits_every_call() -> None:
    quota = SessionQuota()
    assert quota.limit is None
    assert all(quota.admits(n) for n in (0, 10, 1000))


def test_configured_limit_counts_the_handover_reserve() -> None:
    plain = SessionQuota(3)
    assert [plain.admits(n) for n in (0, 2, 3, 4)] == [True, True, False, False]
    reserved = SessionQuota(3, handover_reserve=1)
    assert [reserved.admits(n) for n in (0, 1, 2, 3)] == [True, True, False, False]


def test_settings_read_the_session_limit_and_reserve() -> None:
    settings = Settings.from_env(
        {"VOICEBOT_GEMINI_MAX_SESSIONS": "3", "VOICEBOT_GEMINI_HANDOVER_RESERVE": "1"}
    )
    assert (settings.gemini_max_sessions, settings.gemini_handover_reserve) == (3, 1)
    assert Settings.from_env({}).gemini_max_sessions is None
    with pytest.raises(SettingsError, match="VOICEBOT_GEMINI_MAX_SESSIONS"):
        Settings.from_env({"VOICEBOT_GEMINI_MAX_SESSIONS": "0"})


def test_one_refusal_teaches_the_limit_and_a_probe_follows_the_back_off() -> None:
    clock = Clock()
    quota = SessionQuota(clock=clock)
    quota.refused(held=3)
    assert quota.limit == 3
    assert quota.admits(2) and not quota.admits(3)

    clock.now += BACKOFF_SECS - 1
    assert not quota.admits(3)  # still backing off
    clock.now += 1
    assert quota.admits(3)  # the probe: one call over the learned limit
    assert not quota.admits(4)

    quota.refused(held=3)  # the probe was refused: the limit stays, the back-off doubles
    assert quota.limit == 3
    clock.now += BACKOFF_SECS
    assert not quota.admits(3)
    clock.now += BACKOFF_SECS
    assert quota.admits(3)


def test_a_raised_quota_is_found_again_one_call_at_a_time() -> None:
    clock = Clock()
    quota = SessionQuota(clock=clock)
    quota.refused(held=3)
    for expected in (3, 4, 5):
        assert not quota.admits(expected)  # a caller turned away: demand above the limit
        clock.now += BACKOFF_SECS  # back-off (reset after each probe that was served)
        assert quota.admits(expected)
        assert quota.limit == expected + 1
    assert quota.refusals == 1


def test_the_limit_does_not_drift_up_without_callers_turned_away() -> None:
    clock = Clock()
    quota = SessionQuota(clock=clock)
    quota.refused(held=2)
    clock.now += 10 * BACKOFF_SECS
    assert quota.admits(1)
    assert quota.limit == 2


def test_a_configured_limit_caps_what_is_learned() -> None:
    clock = Clock()
    quota = SessionQuota(4, clock=clock)
    quota.refused(held=2)
    assert quota.limit == 2
    for _ in range(5):
        quota.admits(quota.limit or 0)
        clock.now += BACKOFF_SECS
    assert quota.limit == 4


def test_the_registry_refuses_at_the_webhook_once_the_limit_is_learned() -> None:
    calls = CallRegistry(100, quota=SessionQuota(time_scale=1.0))
    records = [CallRecord(f"CA{i}", f"MZ{i}", "frontdesk") for i in range(4)]
    for r in records:
        assert calls.reserve(r.call_sid)
        assert calls.register(r, require_reservation=True)
    # The fourth call's setup is refused for quota: the three others held sessions.
    calls.session_failed("CA3", 1011, QUOTA_REASON)
    calls.unregister(records[3])
    assert calls.quota.limit == 3
    assert not calls.reserve("CA-late")
    assert calls.totals["refused_quota"] == 1
    # A close that is not about quota teaches nothing.
    calls.session_failed("CA0", 1011, "Internal error encountered.")
    assert calls.quota.limit == 3 and calls.quota.refusals == 1


async def test_a_stream_whose_twiml_was_served_is_taken_while_draining() -> None:
    calls = CallRegistry(10)
    assert calls.reserve("CA-promised")
    drain = asyncio.create_task(calls.drain(0.2, wrap_up_secs=0.1))
    await asyncio.sleep(0)
    assert not calls.accepting
    assert not calls.reserve("CA-new")
    assert calls.register(CallRecord("CA-promised", "MZ1", "frontdesk"))
    assert not calls.register(CallRecord("CA-unpromised", "MZ2", "frontdesk"))
    await drain


def _control(persona: str, said: list[str]) -> CallControl:
    async def instruct(text: str) -> bool:
        said.append(text)
        return True

    async def ignore(*_args: object) -> None:
        return None

    return CallControl(
        PERSONAS.get(persona),
        instruct=instruct,
        hang_up=ignore,
        redirect=None,
        wait_played=ignore,
    )


async def test_wrap_up_lets_the_answer_finish_then_says_goodbye() -> None:
    said: list[str] = []
    control = _control("patient", said)  # waits for the caller: no greeting to wait for
    control.observe(BotStartedSpeakingFrame())
    wrap = asyncio.create_task(control.wrap_up("server shutting down"))
    await asyncio.sleep(1.5)
    assert said == []  # the bot is still answering: nothing is said over it
    control.observe(BotStoppedSpeakingFrame())
    started = asyncio.get_running_loop().time()
    assert await asyncio.wait_for(wrap, 3.0)
    waited = asyncio.get_running_loop().time() - started
    assert said == [WRAP_UP_GOODBYE]
    assert 0.9 <= waited < 2.0  # a one-second pause after the answer, not more
    assert control.ending == "server shutting down"
    await control.stop()


async def test_wrap_up_leaves_a_call_that_is_already_ending() -> None:
    said: list[str] = []
    control = _control("patient", said)
    await control.say_goodbye("Bye.", "caller idle")
    assert not await control.wrap_up("server shutting down")
    assert control.ending == "caller idle"
    assert WRAP_UP_GOODBYE not in said
    await control.stop()
