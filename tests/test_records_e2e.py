"""Call records end to end: a real call writes its record and transcript, in SQLite and PostgreSQL.

The real server, SDK and Pipecat talk to the emulator over loopback; the records go through the
real writer into a real database: a SQLite file in the test's folder, or a PostgreSQL server
started from the system's binaries into a temporary folder (``sim.postgres``; skipped, saying
why, only where PostgreSQL cannot run). Then the database is taken away while calls run: they
must not notice, and their records are written once it is back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.app_keys import RECORDS
from bot.records.reader import Query, get_call, list_calls
from sim.caller import CallPlan, place_call
from sim.emulator import EmulatorConfig
from sim.emulator.config import SHORT_REPLY_WAV, FaultPlan
from sim.postgres import TempPostgres, unavailable_reason
from sim.testing import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def postgres() -> Iterator[TempPostgres]:
    """One PostgreSQL server per test worker."""
    why = unavailable_reason()
    if why is not None:
        pytest.skip(f"PostgreSQL cannot run here: {why}")
    pg = TempPostgres()
    try:
        pg.start()
    except RuntimeError as e:
        pg.stop()
        pytest.skip(f"PostgreSQL cannot run here: {e}")
    yield pg
    pg.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: Any, tmp_path: Path) -> AsyncIterator[tuple[str, Any]]:
    """(records URL, the PostgreSQL server or None): an empty records database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/records/calls.db", None
        return
    pg: TempPostgres = request.getfixturevalue("postgres")
    name = f"t{abs(hash(request.node.nodeid)) % 10**9}"
    yield await asyncio.to_thread(pg.create_database, name), pg


def barge_in_plan() -> CallPlan:
    # The greeting, a question, a barge-in 1.5 s into the long answer, 3 s of the next, bye.
    return (
        CallPlan()
        .wait_for_greeting()
        .say("caller_question.wav")
        .barge_in(after_bot_audio_secs=1.5)
        .pause(3.0)
        .hangup()
    )


async def test_a_call_with_a_barge_in_and_a_handover_is_recorded_turn_by_turn(
    make_emulator, make_server, database
):
    url, _ = database
    # goAway 5 s into every connection (2 s left): the call hands over at least once.
    emu = await make_emulator(EmulatorConfig(think_ms=300), FaultPlan(goaway_after=5, time_left=2))
    server = await make_server(emulator=emu, database_url=url)
    writer = server.app[RECORDS]
    result = await place_call(server.url, barge_in_plan(), from_="+15551230123")
    assert result.ok, result.failure
    assert result.bargeins == 1 and result.clears == 1

    assert await wait_until(lambda: writer.stats()["submitted"] == 1, 5), writer.stats()
    assert await writer.flushed(10), writer.stats()
    stats = writer.stats()
    assert stats["written"] == 1 and stats["dropped"] == stats["lost"] == 0, stats
    rows = await list_calls(writer.database, Query())
    assert [r["call_sid"] for r in rows] == [result.call_sid]
    call, turns = await get_call(writer.database, result.call_sid)

    assert call["persona"] == "frontdesk"
    assert call["caller"] == "+1******0123"  # masked: the last 4 digits (the default)
    assert call["end_reason"] == "caller hung up" and call["failed"] is False
    assert 3 < call["duration_secs"] < 40
    assert 0 < call["setup_secs"] < 5 and 0 < call["first_audio_secs"] < 5
    assert call["barge_ins"] == 1
    assert call["handovers"] >= 1, (call, emu.closes)
    assert call["responses"] >= 1 and 0 < call["response_p50_secs"] <= call["response_max_secs"]
    assert call["tokens"]["prompt"] > 0 and call["tokens"]["response"] > 0
    assert call["transcript_kept"] is True

    brief = [
        (t["speaker"], t["at_secs"], t["text"], t["interrupted"], t["heard_secs"]) for t in turns
    ]
    assert all(t["at_secs"] <= u["at_secs"] for t, u in zip(turns, turns[1:], strict=False))
    greeting = turns[0]
    assert greeting["speaker"] == "bot" and not greeting["interrupted"], brief
    # The emulator transcribes its audio as a label, e.g. "[bot audio 3.87 s]", all heard.
    assert greeting["text"].startswith("[bot audio") and greeting["heard_text"] == greeting["text"]
    assert 3.0 < greeting["heard_secs"] < 4.5, brief  # the 3.87 s greeting, played whole
    cut = [t for t in turns if t["interrupted"]]
    assert len(cut) == 1, brief  # the long answer, cut by the barge-in
    answer = cut[0]
    i = turns.index(answer)
    assert answer["speaker"] == "bot"
    # Heard: the 1.5 s the caller waited, plus its barge-in's detection; not the 13.8 s answer.
    assert 1.0 <= answer["heard_secs"] < 4.0, brief
    # What was heard of it is what was said before the cut (the emulator transcribes a reply
    # alongside its second half, so here nothing yet): a prefix of the model's words.
    assert answer["text"].startswith(answer["heard_text"]), brief
    question = [t for t in turns[:i] if t["speaker"] == "caller"]
    assert question and question[-1]["text"].startswith("[caller audio"), brief
    after = turns[i + 1 :]
    assert [t["speaker"] for t in after][:1] == ["caller"] and after[0]["text"], brief
    reply = [t for t in after if t["speaker"] == "bot"]
    assert reply and reply[0]["heard_secs"] > 1.0 and not reply[0]["interrupted"], brief


async def test_calls_go_on_while_the_database_is_down_and_are_recorded_when_it_returns(
    make_emulator, make_server, database
):
    url, pg = database
    # The greeting's length plays no part here: the 2.06 s short reply, not the 3.9 s greeting.
    emu = await make_emulator(EmulatorConfig(think_ms=300, greeting_wav=SHORT_REPLY_WAV))
    server = await make_server(emulator=emu, database_url=url)
    writer = server.app[RECORDS]
    assert await wait_until(lambda: writer.stats()["database_up"] and writer.migrated, 10)
    plan = CallPlan().wait_for_greeting().say("caller_question.wav").pause(1.0).hangup()

    outage = await _take_down(url, pg)
    try:
        results = await asyncio.gather(*(place_call(server.url, plan) for _ in range(4)))
        assert await wait_until(lambda: writer.stats()["submitted"] == 4, 5), writer.stats()
        assert all(r.ok for r in results), [r.failure for r in results]
        assert all(r.end_reason == "caller hung up" for r in results)
        assert max(r.gap_max_ms for r in results) < 150, [r.gap_max_ms for r in results]
        assert await wait_until(lambda: writer.stats()["failures"] >= 1, 5), writer.stats()
        stats = writer.stats()
        assert stats["written"] == 0 and stats["queued"] == 4, stats
        assert stats["database_up"] is False, stats
    finally:
        await outage()

    assert await writer.flushed(15), writer.stats()
    stats = writer.stats()
    assert stats["written"] == 4 and stats["dropped"] == stats["lost"] == 0, stats
    assert stats["database_up"] is True
    rows = await list_calls(writer.database, Query())
    assert sorted(r["call_sid"] for r in rows) == sorted(r.call_sid for r in results)


async def _take_down(url: str, pg: TempPostgres | None) -> Any:
    """Make the database refuse writes; returns the coroutine function that brings it back."""
    if pg is not None:
        await asyncio.to_thread(pg.stop_server)

        async def back() -> None:
            await asyncio.to_thread(pg.start_server)

        return back
    # SQLite: another process's exclusive lock (as a backup or a stuck writer would hold it).
    path = url.split("///", 1)[1]
    locker = await asyncio.create_subprocess_exec(
        "python3",
        "-c",
        "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('BEGIN EXCLUSIVE');"
        " print('locked', flush=True); sys.stdin.read()",
        path,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert locker.stdout is not None and locker.stdin is not None
    assert (await locker.stdout.readline()).strip() == b"locked"

    async def release() -> None:
        assert locker.stdin is not None
        locker.stdin.close()
        await locker.wait()

    return release
