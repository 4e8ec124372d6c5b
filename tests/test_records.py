"""Call records without a call: masking, URLs, the journal's turns, the writer, migrations, CLI.

The writer and the CLI run against real SQLite files in the test's folder (no mocks of the
database layer); the journal is fed the frames and transcript events a call produces.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    InterruptionFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.frames.frames import TextType as PipecatTextType
from sqlalchemy import inspect

from bot import cli
from bot.records.database import Database, DatabaseError, database_url
from bot.records.reader import Query, get_call, list_calls, parse_since
from bot.records.record import CallSummary, mask_number, summarise_call
from bot.records.tables import metadata
from bot.records.writer import RecordWriter
from bot.settings import Settings, SettingsError
from pipelines.call.journal import CallJournal
from pipelines.personas.schema import Persona
from pipelines.ports import TranscriptTurn
from sim.testing import wait_until

pytestmark = pytest.mark.unit


# masking, URLs, --since --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "mode", "kept"),
    [
        ("+15551230123", "last4", "+1******0123"),
        ("+442071234567", "last4", "+4*******4567"),
        ("+15551230123", "full", "+15551230123"),
        ("+15551230123", "none", "************"),
        ("anonymous", "last4", "*****mous"),
        ("123", "last4", "***"),
        ("", "last4", ""),
    ],
)
def test_numbers_are_masked_as_configured(number: str, mode: str, kept: str) -> None:
    assert mask_number(number, mode) == kept


def test_database_urls_get_their_async_driver_and_bad_ones_say_what_is_expected() -> None:
    assert database_url("sqlite:///var/calls.db") == "sqlite+aiosqlite:///var/calls.db"
    assert database_url("postgresql://u:p@db/calls") == "postgresql+asyncpg://u:p@db/calls"
    assert database_url("postgres://u@db/calls") == "postgresql+asyncpg://u@db/calls"
    assert database_url("off") is None
    with pytest.raises(DatabaseError, match="expected sqlite:// or postgresql://"):
        database_url("mysql://u@db/calls")
    with pytest.raises(SettingsError, match="VOICEBOT_DATABASE_URL: .*expected a URL"):
        Settings.from_env({"VOICEBOT_DATABASE_URL": "not a url"})
    s = Settings.from_env(
        {"VOICEBOT_RECORDS_RETENTION_DAYS": "off", "VOICEBOT_RECORD_NUMBERS": "full"}
    )
    assert s.records_retention_days is None and s.record_numbers == "full"
    assert s.records_url == "sqlite+aiosqlite:///voicebot-calls.db"  # the default: no setup
    with pytest.raises(SettingsError, match="VOICEBOT_RECORD_NUMBERS"):
        Settings.from_env({"VOICEBOT_RECORD_NUMBERS": "some"})


def test_since_takes_dates_times_and_ages() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert parse_since("1h", now) == now - timedelta(hours=1)
    assert parse_since("2d", now) == now - timedelta(days=2)
    assert parse_since("2026-11-30", now) == datetime(2026, 11, 30, tzinfo=UTC)
    assert parse_since("2026-11-30T08:15", now) == datetime(2026, 11, 30, 8, 15, tzinfo=UTC)
    with pytest.raises(ValueError, match="expected a date .* or an age"):
        parse_since("yesterday", now)


def test_a_persona_can_keep_its_transcripts_out_of_the_records() -> None:
    base = {"id": "p", "system_instruction": "You are a test bot."}
    assert Persona.model_validate(base).records.transcript is True
    off = Persona.model_validate({**base, "records": {"transcript": False}})
    assert off.records.transcript is False
    with pytest.raises(ValueError, match="extra"):
        Persona.model_validate({**base, "records": {"transcripts": False}})


# the journal -------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def text_frame(text: str) -> TTSTextFrame:
    return TTSTextFrame(text, text_type=PipecatTextType.SENTENCE)


def test_the_journal_keeps_turns_in_speaking_order_and_marks_the_cut_one() -> None:
    clock = Clock()
    seen: list[TranscriptTurn] = []
    j = CallJournal(started=100.0, on_turn=seen.append, stop_lag_secs=0.8, clock=clock)
    # The greeting: words, then audio, played whole.
    j.bot_said("Hello, ")
    j.bot_said("how can I help?")
    j.observe(BotStartedSpeakingFrame())
    j.observe(text_frame("Hello, how can I help?"))
    clock.now = 102.0
    j.observe(BotStoppedSpeakingFrame())
    # The caller asks; Pipecat interrupts at every speech start (nothing playing: no cut).
    clock.now = 103.0
    j.observe(UserStartedSpeakingFrame())
    j.observe(InterruptionFrame())
    clock.now = 105.8
    j.observe(UserStoppedSpeakingFrame())  # quiet since 105.0 (stop_secs 0.8)
    # The answer starts 0.4 s after the caller went quiet; the question's words come late.
    clock.now = 105.4
    j.bot_said("Our opening hours are")
    clock.now = 105.5  # (clock order only matters for the anchors below)
    j.observe(BotStartedSpeakingFrame())
    j.caller_said("When are you open?")
    j.observe(text_frame("Our opening hours are"))
    j.bot_said(" nine to five, Monday to Friday.")
    # The caller barges in 1.2 s into it.
    clock.now = 106.7
    j.observe(UserStartedSpeakingFrame())
    j.observe(InterruptionFrame())
    j.observe(BotStoppedSpeakingFrame())
    j.caller_said("Sorry, on Saturday?")
    clock.now = 108.0
    j.bot_said("Closed on Saturdays.")
    j.observe(BotStartedSpeakingFrame())
    clock.now = 109.0
    turns = j.finish()

    assert [(t.speaker, t.at_secs) for t in turns] == [
        ("bot", 0.0), ("caller", 3.0), ("bot", 5.4), ("caller", 6.7), ("bot", 8.0),
    ]  # fmt: skip
    greeting, question, answer, barge, reply = turns
    assert greeting.text == "Hello, how can I help?" and greeting.heard_secs == 2.0
    assert not greeting.interrupted and greeting.heard_text == greeting.text
    assert question.text == "When are you open?" and question.heard_text is None
    assert answer.interrupted and answer.heard_secs == pytest.approx(1.2)
    assert answer.text == "Our opening hours are nine to five, Monday to Friday."
    assert answer.heard_text == "Our opening hours are"  # what reached the phone before `clear`
    assert barge.text == "Sorry, on Saturday?"
    assert (
        reply.text == "Closed on Saturdays." and not reply.interrupted and reply.heard_secs == 1.0
    )
    assert j.barge_ins == 1
    assert j.first_audio_secs == 0.0
    assert j.response_secs == [pytest.approx(0.5)]  # 105.0 quiet -> 105.5 heard
    assert [t.speaker for t in seen] == ["bot", "caller", "bot", "caller", "bot"]


def test_a_journal_that_keeps_no_words_keeps_the_turns_timings() -> None:
    clock = Clock()
    live: list[TranscriptTurn] = []
    j = CallJournal(started=100.0, keep_text=False, clock=clock, on_turn=live.append)
    j.bot_said("Hello.")
    j.observe(BotStartedSpeakingFrame())
    clock.now = 101.0
    j.observe(BotStoppedSpeakingFrame())
    j.caller_said("My card number is 4111 1111 1111 1111.")
    turns = j.finish()
    assert [(t.speaker, t.text, t.heard_secs) for t in turns] == [
        ("bot", "", 1.0), ("caller", "", None),
    ]  # fmt: skip
    assert [t.text for t in live] == ["", ""]  # the live view gets no words either


def test_usage_is_summed_by_kind() -> None:
    j = CallJournal()
    j.model_usage({"prompt": 900, "response": 120, "response_audio": 100})
    j.model_usage({"prompt": 1100, "response": 80, "thoughts": 0})
    assert j.tokens == {"prompt": 2000, "response": 200, "response_audio": 100}


# the writer --------------------------------------------------------------------------------


def summary(sid: str, *, started: datetime | None = None, **kw: object) -> CallSummary:
    s = summarise_call(
        call_sid=sid, stream_sid="MZ" + sid, persona=str(kw.pop("persona", "frontdesk")),
        caller="+15551230123", called="+15005550006", duration_secs=12.5,
        end_reason=str(kw.pop("end_reason", "caller hung up")),
    )  # fmt: skip
    turns = (
        TranscriptTurn("bot", "Hello.", 0.4, False, "Hello.", 1.1),
        TranscriptTurn("caller", "Hi, when are you open?", 2.0),
        TranscriptTurn("bot", "We open at nine and", 4.1, True, "We open", 0.9),
    )
    s = dataclasses.replace(s, turns=turns, barge_ins=1, tokens={"prompt": 10}, **kw)  # type: ignore[arg-type]
    if started is not None:
        s = dataclasses.replace(s, started_at=started)
    return s


async def writer_at(tmp_path: Path, **kw: object) -> RecordWriter:
    db = Database(database_url(f"sqlite:///{tmp_path}/calls.db") or "")
    writer = RecordWriter(db, retry_first_secs=0.05, retry_max_secs=0.2, **kw)  # type: ignore[arg-type]
    writer.start()
    return writer


async def test_records_are_written_once_with_their_turns(tmp_path: Path) -> None:
    writer = await writer_at(tmp_path)
    try:
        for sid in ("CA1", "CA2", "CA1"):  # a record handed in twice is stored once
            writer.submit(summary(sid))
        assert await writer.flushed(5), writer.stats()
        rows = await list_calls(writer.database, Query())
        assert sorted(r["call_sid"] for r in rows) == ["CA1", "CA2"]
        call, turns = await get_call(writer.database, "CA1")
        assert call["caller"] == "+1******0123" and call["barge_ins"] == 1
        assert call["tokens"] == {"prompt": 10} and call["prompt_tokens"] == 10
        assert [(t["speaker"], t["interrupted"], t["heard_text"]) for t in turns] == [
            ("bot", False, "Hello."), ("caller", False, None), ("bot", True, "We open"),
        ]  # fmt: skip
    finally:
        await writer.stop()
        await writer.database.close()


async def test_a_full_queue_drops_the_oldest_and_counts_it(tmp_path: Path) -> None:
    writer = RecordWriter(Database(database_url(f"sqlite:///{tmp_path}/c.db") or ""), max_queue=3)
    for i in range(5):  # not started: nothing leaves the queue
        writer.submit(summary(f"CA{i}"))
    stats = writer.stats()
    assert stats["queued"] == 3 and stats["dropped"] == 2 and stats["submitted"] == 5
    writer.start()
    try:
        assert await writer.flushed(5)
        rows = await list_calls(writer.database, Query())
        assert sorted(r["call_sid"] for r in rows) == ["CA2", "CA3", "CA4"]  # the newest kept
    finally:
        await writer.stop()
        await writer.database.close()


async def test_a_record_the_database_refuses_is_dropped_and_counted_not_retried(
    tmp_path: Path,
) -> None:
    writer = await writer_at(tmp_path)
    try:
        assert await writer.flushed(5)
        bad = dataclasses.replace(summary("CAbad"), stream_sid=None)  # type: ignore[arg-type]
        for record in (summary("CA1"), bad, summary("CA2")):
            writer.submit(record)
        assert await writer.flushed(5), writer.stats()
        stats = writer.stats()
        assert stats["written"] == 2 and stats["rejected"] == 1, stats
        assert sorted(r["call_sid"] for r in await list_calls(writer.database, Query())) == [
            "CA1", "CA2",
        ]  # fmt: skip
    finally:
        await writer.stop()
        await writer.database.close()


async def test_a_locked_database_delays_records_and_loses_none(tmp_path: Path) -> None:
    writer = await writer_at(tmp_path)
    try:
        assert await writer.flushed(5)
        lock = sqlite3.connect(tmp_path / "calls.db")
        lock.execute("BEGIN EXCLUSIVE")
        writer.submit(summary("CA1"))
        await wait_until(lambda: writer.stats()["failures"] > 0, 10.0)
        stats = writer.stats()
        assert stats["failures"] >= 1 and not stats["database_up"] and stats["queued"] == 1
        assert "locked" in stats["last_error"]
        lock.rollback()
        lock.close()
        assert await writer.flushed(5), writer.stats()
        assert writer.stats()["written"] == 1 and writer.stats()["database_up"]
    finally:
        await writer.stop()
        await writer.database.close()


async def test_retention_deletes_old_records_with_their_turns(tmp_path: Path) -> None:
    old = datetime.now(UTC) - timedelta(days=40)
    writer = await writer_at(tmp_path, retention_days=30)
    try:
        writer.submit(summary("CAold", started=old))
        writer.submit(summary("CAnew"))
        assert await writer.flushed(5)
        # The hourly sweep, now, run by the writer's own loop. (A second sweep run here, beside
        # the one the loop may start after its first batch, deleted nothing and returned before
        # the loop's sweep, which deleted the row, had counted it: a clean CI run.)
        writer._next_retention = 0.0
        writer._wake.set()
        await wait_until(lambda: writer.stats()["retention_deleted"] > 0, 5.0)
        assert writer.stats()["retention_deleted"] == 1
        assert [r["call_sid"] for r in await list_calls(writer.database, Query())] == ["CAnew"]
        with sqlite3.connect(tmp_path / "calls.db") as c:
            assert c.execute("select count(*) from transcript_turns").fetchone() == (3,)
    finally:
        await writer.stop()
        await writer.database.close()


async def test_records_left_at_shutdown_are_counted_as_lost(tmp_path: Path) -> None:
    writer = RecordWriter(Database(database_url(f"sqlite:///{tmp_path}/x/c.db") or ""))
    writer.submit(summary("CA1"))
    await writer.stop(0.1)  # never started: it cannot write
    assert writer.stats()["lost"] == 1 and writer.stats()["queued"] == 0
    await writer.database.close()


# migrations --------------------------------------------------------------------------------


async def test_the_migrations_create_exactly_the_schema_in_code(tmp_path: Path) -> None:
    db = Database(database_url(f"sqlite:///{tmp_path}/m.db") or "")
    try:
        await db.upgrade()
        await db.upgrade()  # idempotent
        current, head = await db.revision()
        assert current == head and current not in (None, "0001")

        def columns(conn: object) -> dict[str, list[str]]:
            insp = inspect(conn)
            tables = [t.name for t in metadata.sorted_tables]
            return {t: [c["name"] for c in insp.get_columns(t)] for t in tables}

        async with db.engine.connect() as conn:
            migrated = await conn.run_sync(columns)
        assert migrated == {t.name: [c.name for c in t.columns] for t in metadata.sorted_tables}
    finally:
        await db.close()


# the CLI -----------------------------------------------------------------------------------


@pytest.fixture
def small_db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/cli.db"

    async def fill() -> None:
        writer = RecordWriter(Database(database_url(url) or ""))
        writer.start()
        writer.submit(summary("CAok1", persona="frontdesk"))
        writer.submit(summary("CAbad2", persona="sales", end_reason="Live API closed 1011"))
        writer.submit(
            summary("CAold3", persona="sales", started=datetime.now(UTC) - timedelta(days=3))
        )
        assert await writer.flushed(5)
        await writer.stop()
        await writer.database.close()

    asyncio.run(fill())
    return url


def voicebot(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_calls_list_filters_by_persona_age_and_failure(small_db: str, capsys) -> None:
    code, out, _ = voicebot("calls", "--database-url", small_db, "list", capsys=capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["started", "(UTC)", "call", "SID"]
    assert [line.split()[2] for line in lines[1:]] == ["CAbad2", "CAok1", "CAold3"]  # newest first
    assert "+1******0123" in out and "+15551230123" not in out

    _, out, _ = voicebot("calls", "--database-url", small_db, "list", "--persona", "sales",
                         "--since", "1d", capsys=capsys)  # fmt: skip
    assert [line.split()[2] for line in out.splitlines()[1:]] == ["CAbad2"]
    _, out, _ = voicebot("calls", "--database-url", small_db, "list", "--failed", capsys=capsys)
    assert [line.split()[2] for line in out.splitlines()[1:]] == ["CAbad2"]
    assert "FAILED Live API closed 1011" in out
    code, _, err = voicebot("calls", "--database-url", small_db, "list", "--since", "soon",
                            capsys=capsys)  # fmt: skip
    assert code == 1 and "--since: got 'soon'" in err


def test_calls_show_prints_the_record_and_the_transcript_with_the_cut_turn(
    small_db: str, capsys
) -> None:
    code, out, _ = voicebot("calls", "--database-url", small_db, "show", "CAok1", capsys=capsys)
    assert code == 0
    assert "persona" in out and "frontdesk" in out and "caller hung up" in out
    transcript = out.split("\n\n", 1)[1].splitlines()
    assert transcript[0].split() == ["0.40", "bot", "Hello."]
    assert transcript[1].split()[:2] == ["2.00", "caller"]
    assert transcript[2].startswith("   4.10  bot     We open at nine and")
    assert "[cut after 0.90 s; heard: 'We open']" in transcript[2]

    code, _, err = voicebot("calls", "--database-url", small_db, "show", "CAnope", capsys=capsys)
    assert code == 2 and "no call 'CAnope'" in err


def test_calls_says_what_is_wrong_with_the_database(tmp_path: Path, capsys) -> None:
    code, _, err = voicebot("calls", "--database-url", "off", "list", capsys=capsys)
    assert code == 1 and "records are off" in err
    empty = f"sqlite:///{tmp_path}/empty.db"
    code, _, err = voicebot("calls", "--database-url", empty, "list", capsys=capsys)
    assert code == 1 and "no records database at" in err
    assert not (tmp_path / "empty.db").exists()  # reading creates nothing
    (tmp_path / "empty.db").touch()
    code, _, err = voicebot("calls", "--database-url", empty, "list", capsys=capsys)
    assert code == 1 and "no call records yet" in err and "voicebot calls upgrade" in err
    code, out, _ = voicebot("calls", "--database-url", empty, "upgrade", capsys=capsys)
    assert code == 0 and "records schema at revision 000" in out  # the head (0003: tool_calls)
    code, out, _ = voicebot("calls", "--database-url", empty, "list", capsys=capsys)
    assert code == 0 and out.strip() == "no calls"
