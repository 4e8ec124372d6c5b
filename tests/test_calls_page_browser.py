"""The calls page in a real headless Chromium, during a real call and after it.

The real server (SQLite records, an ops token) takes a simulated call through the emulator;
Debian's Chromium, driven by Playwright (no browser download), opens the page on the
operations listener with ``/?token=`` (the cookie login), sees the live call with its persona
and a transcript line, and saves a screenshot. When the call has ended and its record is
written, the past-calls list shows it and its detail shows the transcript turn by turn. A
stored call whose transcript is hostile markup is shown as text, and the page logs no error
(a Content-Security-Policy violation would be one).

Skipped, saying why, only where Chromium or Playwright is missing (``.ci/run`` installs
Chromium as root). Screenshots go to ``tests/artifacts/`` (``VOICEBOT_TEST_ARTIFACTS``
overrides); the paths are printed.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert

from bot.app_keys import RECORDS
from bot.records.tables import calls, turns
from sim.caller import CallPlan, place_call
from sim.emulator import EmulatorConfig
from sim.emulator.config import SHORT_REPLY_WAV
from sim.testing import TEST_THINK_MS, wait_until

pytestmark = pytest.mark.e2e

OPS_TOKEN = "browser-page-token-9d4e"
# The flags Chromium needs on a machine with no outside network and no screen.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LIVE_STATES = re.compile("greeting|speaking|listening|handing over")
HOSTILE = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
HOSTILE_SID = "CAhostile0000000000000000000000001"


def _chromium() -> str:
    for candidate in (
        os.environ.get("VOICEBOT_CHROMIUM"),
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.skip(
        "Chromium not found: install Debian's `chromium` (.ci/run does when root) or set "
        "VOICEBOT_CHROMIUM to its path"
    )


def _artifacts() -> Path:
    where = Path(os.environ.get("VOICEBOT_TEST_ARTIFACTS") or Path(__file__).parent / "artifacts")
    where.mkdir(parents=True, exist_ok=True)
    return where


async def _store_hostile_call(writer) -> None:
    """A past call whose stored words are markup (transcripts are the caller's words)."""
    now = datetime.now(UTC).replace(tzinfo=None)  # SQLite keeps naive UTC
    async with writer.database.engine.begin() as conn:
        result = await conn.execute(
            insert(calls).returning(calls.c.id),
            {
                "call_sid": HOSTILE_SID, "stream_sid": "MZhostile", "persona": "frontdesk",
                "caller": HOSTILE, "called": "+1******0001", "started_at": now,
                "ended_at": now, "duration_secs": 1.0, "end_reason": HOSTILE,
                "failed": True, "responses": 0, "barge_ins": 0, "handovers": 0,
                "reconnects": 0, "transcript_kept": True,
            },
        )  # fmt: skip
        call_id = result.scalar_one()
        await conn.execute(
            insert(turns),
            [{"call_id": call_id, "seq": 0, "speaker": "caller", "at_secs": 0.5, "text": HOSTILE}],
        )


async def test_the_calls_page_shows_a_live_call_then_its_record(
    make_emulator, make_server, tmp_path
):
    executable = _chromium()
    playwright = pytest.importorskip(
        "playwright.async_api", reason="Playwright is not installed (pip install playwright)"
    )
    expect = playwright.expect
    short = SHORT_REPLY_WAV  # a 2 s greeting: a bot line, then the caller's
    emu = await make_emulator(EmulatorConfig(think_ms=TEST_THINK_MS, greeting_wav=short))
    server = await make_server(
        emulator=emu, database_url=f"sqlite:///{tmp_path}/calls.db", ops_token=OPS_TOKEN
    )
    writer = server.app[RECORDS]
    assert await wait_until(lambda: writer.migrated, 10)
    await _store_hostile_call(writer)
    plan = CallPlan().wait_for_greeting().say("caller_question.wav").pause(2.5).hangup()
    call = asyncio.create_task(place_call(server.url, plan))
    shots = _artifacts()
    errors: list[str] = []

    async with playwright.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: errors.append(f"{r.url}: {r.failure}"))
            page.on(
                "response",
                lambda r: errors.append(f"{r.url}: {r.status}") if r.status >= 400 else None,
            )
            await page.goto(f"{server.ops_url}/?token={OPS_TOKEN}")
            assert page.url == f"{server.ops_url}/"  # the token is off the address bar

            # During the call: its persona, state and a transcript line, updating live.
            row = page.locator("#live-rows tr").first
            await expect(row.locator(".persona")).to_have_text("frontdesk", timeout=10_000)
            await expect(row.locator(".lines .text").first).to_contain_text(
                "[bot audio", timeout=10_000
            )
            await expect(row.locator(".state")).to_have_text(LIVE_STATES)
            # The greeting closed and the caller's question began: two lines, then the picture.
            await expect(row.locator(".lines .who").nth(1)).to_have_text("caller", timeout=10_000)
            sid = await row.get_attribute("data-sid")
            live_shot = shots / "calls_page_live.png"
            await page.screenshot(path=str(live_shot), full_page=True)
            print(f"calls page screenshot (live call): {live_shot}")

            result = await call
            assert result.ok, result.failure
            assert sid == result.call_sid
            assert await wait_until(lambda: writer.stats()["submitted"] == 1, 5), writer.stats()
            assert await writer.flushed(10), writer.stats()

            # After it: gone from the live list, in the past calls, its transcript in detail.
            await expect(page.locator("#live-empty")).to_be_visible(timeout=5_000)
            past = page.locator(f'#past-rows tr[data-sid="{sid}"]')
            await expect(past).to_be_visible(timeout=8_000)
            await expect(past.locator(".end")).to_have_text("caller hung up")
            await past.click()
            await expect(page.locator("#detail-sid")).to_have_text(sid)
            items = page.locator("#detail-turns li")
            await expect(items.first).to_contain_text("[bot audio", timeout=5_000)
            await expect(items.nth(1)).to_contain_text("[caller audio")
            await expect(page.locator("#detail-fields")).to_contain_text("first audio")
            detail_shot = shots / "calls_page_detail.png"
            await page.screenshot(path=str(detail_shot), full_page=True)
            print(f"calls page screenshot (past call): {detail_shot}")

            # Hostile stored text is shown as text: no element made, no script run.
            await page.goto(f"{server.ops_url}/#call={HOSTILE_SID}")
            await expect(page.locator("#detail-turns li .text")).to_have_text(HOSTILE)
            hostile_row = page.locator(f'#past-rows tr[data-sid="{HOSTILE_SID}"]')
            await expect(hostile_row.locator(".end")).to_have_text(f"FAILED: {HOSTILE}")
            assert await page.locator("main img, main script").count() == 0
            assert await page.evaluate("window.__pwned === undefined")
        finally:
            await browser.close()
    assert errors == [], errors
