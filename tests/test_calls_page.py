"""The calls page's parts without sockets: a live call's bounded lines, and the page cookie."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from aiohttp.test_utils import make_mocked_request

from bot.calls import CallRecord, CallRegistry
from bot.calls_page.live import LIVE_LINES, LiveView
from bot.calls_page.routes import _dumps, host_is_literal
from bot.ops import PAGE_COOKIE, OpsAuth
from pipelines.ports import TranscriptTurn

pytestmark = pytest.mark.unit


def _turn(i: int, speaker: str = "caller") -> TranscriptTurn:
    return TranscriptTurn(speaker, f"line {i}", float(i), interrupted=i == 3)


async def test_a_live_call_keeps_only_its_last_lines():
    registry = CallRegistry(max_calls=2)
    record = CallRecord("CA1", "MZ1", "frontdesk")
    assert registry.register(record)
    for i in range(LIVE_LINES + 4):
        registry.turn_ended("CA1", _turn(i, "bot" if i % 2 else "caller"))
    registry.turn_ended("CA-gone", _turn(99))  # a call that already ended: ignored
    lines = record.live.recent()
    assert [line["text"] for line in lines] == [f"line {i}" for i in range(4, LIVE_LINES + 4)]
    assert all(line["open"] is False for line in lines)
    assert record.live.state() == "up"  # no pipeline attached: state unknown


def test_line_json_carries_the_turn_and_nothing_else():
    view = LiveView(max_lines=2)
    view.turn_ended(_turn(3))
    assert view.recent() == [
        {"speaker": "caller", "text": "line 3", "at_secs": 3.0, "interrupted": True, "open": False}
    ]


def test_datetimes_leave_as_utc_with_z():
    naive = datetime(2026, 12, 1, 15, 4, 5)  # SQLite hands back naive UTC
    assert _dumps({"at": naive}) == '{"at":"2026-12-01T15:04:05Z"}'
    assert _dumps({"at": naive.replace(tzinfo=UTC)}) == '{"at":"2026-12-01T15:04:05Z"}'


def _request(method: str, path: str, cookie: str | None = None, auth: str | None = None):
    headers = {}
    if cookie is not None:
        headers["Cookie"] = f"{PAGE_COOKIE}={cookie}"
    if auth is not None:
        headers["Authorization"] = auth
    return make_mocked_request(method, path, headers=headers)


def test_the_page_cookie_is_not_the_token_and_only_reads():
    auth = OpsAuth("s3cret-token")
    assert auth.cookie and "s3cret-token" not in auth.cookie
    assert auth.refusal(_request("GET", "/api/calls/live", cookie=auth.cookie)) is None
    assert auth.refusal(_request("HEAD", "/", cookie=auth.cookie)) is None
    assert auth.refusal(_request("POST", "/stats/reset", cookie=auth.cookie)) is not None
    assert auth.refusal(_request("GET", "/", cookie="s3cret-token")) is not None
    assert auth.refusal(_request("GET", "/", cookie=auth.cookie + "0")) is not None
    # A header, when sent, is what counts (a wrong one is not rescued by the cookie).
    wrong = _request("GET", "/", cookie=auth.cookie, auth="Bearer nope")
    assert auth.refusal(wrong) == "wrong bearer token"


def test_the_token_login_answers_only_on_the_page_and_redirects_to_a_fixed_path():
    auth = OpsAuth("s3cret-token")
    login = auth.page_login(_request("GET", "/?token=s3cret-token"))
    assert login is not None and login.status == 303 and login.headers["Location"] == "/"
    assert login.cookies[PAGE_COOKIE].value == auth.cookie
    assert login.cookies[PAGE_COOKIE]["httponly"] and login.cookies[PAGE_COOKIE]["samesite"]
    assert auth.page_login(_request("GET", "/stats?token=s3cret-token")) is None
    # A path that looks like another host still lands on this listener's own page.
    odd = auth.page_login(_request("GET", "//evil.example/?token=s3cret-token"))
    assert odd is not None and odd.headers["Location"] == "/"
    assert auth.page_login(_request("POST", "/?token=s3cret-token")) is None
    assert OpsAuth(None).page_login(_request("GET", "/?token=x")) is None
    with pytest.raises(Exception) as refused:
        auth.page_login(_request("GET", "/calls?token=wrong"))
    assert getattr(refused.value, "status", None) == 401
    assert auth.refused == 1


@pytest.mark.parametrize(
    ("host", "literal"),
    [
        ("127.0.0.1:9464", True),
        ("localhost:9464", True),
        ("[::1]:9464", True),
        ("10.0.0.7", True),
        ("rebound.example:9464", False),
        ("127.0.0.1.nip.io:9464", False),
        ("", False),
        (None, False),
    ],
)
def test_without_a_token_only_a_literal_host_is_served(host, literal):
    assert host_is_literal(host) is literal


def test_the_journal_tells_who_is_heard_and_the_open_turn():
    from pipecat.frames.frames import (
        BotStartedSpeakingFrame,
        BotStoppedSpeakingFrame,
        UserStartedSpeakingFrame,
    )

    from pipelines.call.journal import CallJournal

    now = [100.0]
    closed: list[TranscriptTurn] = []
    journal = CallJournal(started=100.0, on_turn=closed.append, clock=lambda: now[0])
    assert journal.speaking is None and journal.current() is None
    journal.observe(BotStartedSpeakingFrame())
    journal.bot_said("Hello, thanks for calling.")
    assert journal.speaking == "bot"
    assert journal.current() == TranscriptTurn("bot", "Hello, thanks for calling.", 0.0,
                                                heard_text="", heard_secs=0.0)  # fmt: skip
    now[0] = 102.0
    journal.observe(BotStoppedSpeakingFrame())
    journal.observe(UserStartedSpeakingFrame())
    assert journal.speaking == "caller"
    assert [t.text for t in closed] == ["Hello, thanks for calling."]  # closed, handed over
    assert journal.current() is None  # the caller's turn has no words yet
    journal.caller_said("When are you open?")
    assert journal.current() == TranscriptTurn("caller", "When are you open?", 2.0)

    hidden = CallJournal(started=0.0, keep_text=False, clock=lambda: 1.0)
    hidden.caller_said("my card number is 4111")
    assert hidden.current() == TranscriptTurn("caller", "", 1.0)  # words not kept: not shown
