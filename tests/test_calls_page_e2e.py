"""The calls page's JSON and its access rule, against the real server and a real call.

The real server (SQLite records in the test's folder, an ops token) takes a simulated call;
while it runs, ``/api/calls/live`` shows it with its persona, state and transcript lines; once
its record is written, ``/api/calls`` lists it and ``/api/calls/{sid}`` returns its record and
transcript. The token rule: the header, or the cookie that ``/?token=`` sets (GET only).
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from bot.app_keys import RECORDS
from sim.caller import CallPlan, place_call
from sim.emulator import EmulatorConfig
from sim.emulator.config import SHORT_REPLY_WAV
from sim.testing import TEST_THINK_MS, wait_until

pytestmark = pytest.mark.e2e

OPS_TOKEN = "ops-page-token-51c2"
AUTH = {"Authorization": f"Bearer {OPS_TOKEN}"}


async def _json(http: aiohttp.ClientSession, url: str, **kw) -> tuple[int, dict]:
    async with http.get(url, **kw) as resp:
        assert resp.headers["Content-Security-Policy"].startswith("default-src 'none'")
        assert resp.headers["Cache-Control"] == "no-store"
        return resp.status, await resp.json()


async def test_live_and_past_calls_json_from_a_real_call(make_emulator, make_server, tmp_path):
    short = SHORT_REPLY_WAV  # a 2 s greeting: a bot line, then the caller's
    emu = await make_emulator(EmulatorConfig(think_ms=TEST_THINK_MS, greeting_wav=short))
    server = await make_server(
        emulator=emu, database_url=f"sqlite:///{tmp_path}/calls.db", ops_token=OPS_TOKEN
    )
    ops = server.ops_url
    plan = CallPlan().wait_for_greeting().say("caller_hello.wav").pause(2.0).hangup()
    call = asyncio.create_task(place_call(server.url, plan, from_="+15551230777"))
    async with aiohttp.ClientSession(headers=AUTH) as http:
        seen: list[dict] = []

        async def live_line() -> bool:
            _, body = await _json(http, ops + "/api/calls/live")
            seen[:] = body["calls"]
            return bool(seen and any(line["text"] for line in seen[0]["lines"]))

        for _ in range(150):  # up to 15 s: the greeting is transcribed as it plays
            if await live_line():
                break
            await asyncio.sleep(0.1)
        assert seen, "the call never showed in /api/calls/live"
        live = seen[0]
        assert live["persona"] == "frontdesk"
        assert live["state"] in ("greeting", "speaking", "listening"), live
        assert live["lines"][0]["speaker"] == "bot"
        assert live["lines"][0]["text"].startswith("[bot audio"), live
        assert "+1555" not in str(live)  # live calls show no numbers
        sid = live["call_sid"]

        # Still live: no record yet, and the detail says why.
        status, body = await _json(http, f"{ops}/api/calls/{sid}")
        assert status == 404 and "still live" in body["error"]

        result = await call
        assert result.ok, result.failure
        writer = server.app[RECORDS]
        assert await wait_until(lambda: writer.stats()["submitted"] == 1, 5), writer.stats()
        assert await writer.flushed(10), writer.stats()
        _, body = await _json(http, ops + "/api/calls/live")
        assert body["calls"] == []

        status, body = await _json(http, ops + "/api/calls?since=1h")
        assert status == 200 and body["records"] is True
        [row] = body["calls"]
        assert row["call_sid"] == sid and row["persona"] == "frontdesk"
        assert row["caller"] == "+1******0777"  # masked as stored
        assert row["end_reason"] == "caller hung up" and row["failed"] is False
        assert row["started_at"].endswith("Z") and row["first_audio_secs"] > 0
        assert "id" not in row

        for query, expected in (("persona=frontdesk", 1), ("persona=other", 0), ("failed=1", 0)):
            _, body = await _json(http, f"{ops}/api/calls?{query}")
            assert len(body["calls"]) == expected, query

        status, body = await _json(http, f"{ops}/api/calls/{sid}")
        assert status == 200 and body["call"]["call_sid"] == sid
        speakers = [t["speaker"] for t in body["turns"]]
        assert speakers[:2] == ["bot", "caller"], body["turns"]
        assert body["turns"][1]["text"].startswith("[caller audio")
        assert all("call_id" not in t for t in body["turns"])

        # Bad requests say what was expected.
        status, body = await _json(http, f"{ops}/api/calls?since=yesterday")
        assert status == 400 and "expected a date" in body["error"]
        status, body = await _json(http, f"{ops}/api/calls?limit=0")
        assert status == 400 and "limit" in body["error"]
        status, body = await _json(http, f"{ops}/api/calls/CA{'0' * 32}")
        assert status == 404 and "no record" in body["error"]
        status, body = await _json(http, f"{ops}/api/calls/{'x' * 65}")
        assert status == 400


async def test_the_page_wants_the_token_and_a_browser_gets_a_get_only_cookie(make_server):
    server = await make_server(ops_token=OPS_TOKEN)  # records off
    ops = server.ops_url
    jar = aiohttp.CookieJar(unsafe=True)  # keep cookies of 127.0.0.1
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        for path in ("/", "/calls", "/api/calls/live", "/static/calls.js"):
            async with http.get(ops + path) as resp:
                assert resp.status == 401, path
        async with http.get(ops + "/?token=wrong", allow_redirects=False) as resp:
            assert resp.status == 401
        assert not jar.filter_cookies(ops)

        async with http.get(f"{ops}/calls?token={OPS_TOKEN}", allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/calls"
            cookie = resp.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert OPS_TOKEN not in cookie  # an HMAC of the token, not the token

        async with http.get(ops + "/") as resp:
            page = await resp.text()
            assert resp.status == 200 and resp.content_type == "text/html"
            csp = resp.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert '<script src="/static/calls.js"' in page and "<script>" not in page
        async with http.get(ops + "/static/calls.js") as resp:
            assert resp.status == 200 and resp.content_type == "text/javascript"
            assert "innerHTML" not in await resp.text()
        async with http.get(ops + "/static/../ops.py") as resp:
            assert resp.status == 404
        status, body = await _json(http, ops + "/api/calls")
        assert status == 200 and body["records"] is False and "off" in body["note"]
        # The cookie never authorises a change.
        async with http.post(ops + "/stats/reset") as resp:
            assert resp.status == 401
    async with aiohttp.ClientSession(headers=AUTH) as http:  # the header still works alone
        status, body = await _json(http, ops + "/api/calls/live")
        assert status == 200 and body["calls"] == []


async def test_without_a_token_the_page_answers_only_a_literal_host(make_server):
    server = await make_server()  # loopback ops listener, no token (development)
    async with aiohttp.ClientSession() as http:
        status, body = await _json(http, server.ops_url + "/api/calls/live")
        assert status == 200 and body["calls"] == []
        # A rebound DNS name (a web page pointing its own name at 127.0.0.1) is refused.
        for path in ("/", "/api/calls/live", "/api/calls"):
            async with http.get(server.ops_url + path, headers={"Host": "rebound.example"}) as r:
                assert r.status == 421, path
                assert "VOICEBOT_OPS_TOKEN" in await r.text()
