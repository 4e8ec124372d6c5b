"""Outbound calls end to end: the real server, the emulator and the fake Twilio REST API.

``POST /calls`` on the ops listener places the call through ``TWILIO_API_BASE_URL`` (the fake,
``sim.twilio_api``), which rings the number, runs Twilio's answering-machine detection, posts
signed status callbacks and fetches the voice webhook like Twilio, then streams with the
simulated caller. The fake's waits run at ``NET_SCALE`` (ringing 0.4 s, a machine's greeting
0.8 s); the media stream is real time.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from bot.outbound.history import timeline
from bot.records.database import Database, database_url
from sim.caller.plan import CallPlan
from sim.caller.twilio_webhook import twilio_signature
from sim.emulator import EmulatorConfig
from sim.emulator.config import SHORT_REPLY_WAV
from sim.testing import TEST_THINK_MS, free_port
from sim.twilio_api import FakeTwilioConfig, NumberBehaviour, running_twilio_api
from sim.twilio_api import numbers as net

pytestmark = pytest.mark.e2e

NET_SCALE = 0.1
OPS_TOKEN = "ops-secret"
PERSON, MACHINE = "+15557770001", "+15557770002"
MESSAGE = "Hi, this is the clinic calling about your appointment. Please call us back."

FRONT = """
model: gemini-3.8-live
default: true
numbers: ["+15005550006"]
system_instruction: "You are a test bot calling ${called}."
greeting: {mode: say, text: "Hello, this is the clinic calling."}
outbound: {on_machine: hang_up, amd_timeout_secs: 10, ring_timeout_secs: 10}
"""
VOICEMAIL = f"""
model: gemini-3.8-live
language: en-GB
numbers: ["+15005550007"]
system_instruction: "You are a test bot."
greeting: {{mode: say, text: "Hello, this is the clinic calling."}}
custom_parameters: {{campaign: none}}
outbound: {{on_machine: leave_message, machine_message: "{MESSAGE}"}}
"""


def write_personas(folder: Path) -> Path:
    folder.mkdir()
    (folder / "front.yaml").write_text(FRONT)
    (folder / "voicemail.yaml").write_text(VOICEMAIL)
    return folder


def network(**numbers: NumberBehaviour) -> FakeTwilioConfig:
    return FakeTwilioConfig(
        numbers={PERSON: NumberBehaviour("person"), MACHINE: NumberBehaviour("machine"),
                 **numbers},
        time_scale=NET_SCALE,
    )  # fmt: skip


async def start(make_server, api, tmp_path: Path, **settings):
    port = free_port()
    return await make_server(
        personas=write_personas(tmp_path / "personas"),
        port=port,
        public_url=f"http://127.0.0.1:{port}",
        twilio_account_sid=api.config.account_sid,
        twilio_auth_token=api.config.auth_token,
        twilio_api_base=api.url,
        ops_token=OPS_TOKEN,
        database_url=f"sqlite:///{tmp_path}/calls.db",
        **settings,
    )


async def dial(server, body: dict, token: str | None = OPS_TOKEN) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{server.ops_url}/calls", json=body, headers=headers) as resp,
    ):
        try:
            return resp.status, await resp.json()
        except aiohttp.ContentTypeError:
            return resp.status, {"text": await resp.text()}


async def statuses(tmp_path: Path, call_sid: str) -> list[dict]:
    db = Database(database_url(f"sqlite:///{tmp_path}/calls.db") or "")
    try:
        return await timeline(db, call_sid)
    finally:
        await db.close()


async def call_record(tmp_path: Path, call_sid: str) -> dict:
    """The call's ``calls`` row, once the records writer has stored it."""
    from bot.records.reader import get_call

    db = Database(database_url(f"sqlite:///{tmp_path}/calls.db") or "")
    try:
        for _ in range(100):
            try:
                return (await get_call(db, call_sid))[0]
            except LookupError:
                await asyncio.sleep(0.05)
        raise AssertionError(f"no record of {call_sid}")
    finally:
        await db.close()


async def test_a_person_answers_the_bot_greets_only_after_detection(
    make_server, make_emulator, tmp_path: Path
) -> None:
    plan = CallPlan().wait_for_greeting(timeout_secs=8).hangup()
    # A 2 s greeting: what matters is when it starts.
    short = SHORT_REPLY_WAV
    emulator = await make_emulator(EmulatorConfig(think_ms=TEST_THINK_MS, greeting_wav=short))
    async with running_twilio_api(network(**{PERSON: NumberBehaviour("person", plan=plan)})) as api:
        server = await start(make_server, api, tmp_path, emulator=emulator)
        status, body = await dial(server, {"to": PERSON, "persona": "front"})
        assert status == 201, body
        assert body["status"] == "queued" and body["sid"].startswith("CA")
        assert await api.wait_all_ended(20)
        call = api.calls[body["sid"]]
        form = api.requests[0]["form"]
        assert form["MachineDetection"] == "Enable" and form["From"] == "+15005550006"
        assert form["Url"].endswith("/twilio/voice?persona=front")

        assert call.answered_by == "human" and call.status == "completed", call.callback_errors
        assert call.answered_at is not None and call.webhook_at is not None
        detection = (net.HELLO_SECS + net.SPEECH_END_THRESHOLD_SECS) * NET_SCALE
        assert call.webhook_at - call.answered_at >= detection * 0.9  # after AMD, not at answer
        assert call.stream is not None and call.stream.ok, call.stream
        greeting = [e.t for e in call.stream.events if e.kind == "greeting"]
        assert greeting, call.stream.events
        assert greeting[0] > call.webhook_at - call.created  # the bot spoke only after that
        assert not call.callback_errors

        rows = await statuses(tmp_path, call.sid)
        assert [r["status"] for r in rows] == ["initiated", "ringing", "in-progress", "completed"]
        assert rows[-1]["answered_by"] == "human" and rows[-1]["persona"] == "front"
        assert rows[-1]["called"] == "+1******0001"  # masked like every number in the records
        assert {r["direction"] for r in rows} == {"outbound-api"}
        record = await call_record(tmp_path, call.sid)  # the person we called is the caller
        assert record["caller"] == "+1******0001" and record["called"] == "+1******0006"


async def test_a_machine_gets_the_persona_message_after_the_beep(
    make_server, make_emulator, tmp_path: Path
) -> None:
    emulator = await make_emulator()
    async with running_twilio_api(network()) as api:
        server = await start(make_server, api, tmp_path, emulator=emulator)
        body = {"to": MACHINE, "persona": "voicemail", "params": {"campaign": "spring"}}
        status, placed = await dial(server, body)
        assert status == 201, placed
        assert await api.wait_all_ended(20)
        call = api.calls[placed["sid"]]
        form = api.requests[0]["form"]
        assert form["MachineDetection"] == "DetectMessageEnd"
        assert "campaign=spring" in form["Url"] and "persona=voicemail" in form["Url"]

        assert call.answered_by == "machine_end_beep" and call.status == "completed"
        assert call.beep_at is not None and call.webhook_at is not None
        assert call.webhook_at >= call.beep_at  # Twilio asked for TwiML after the beep
        assert [s.text for s in call.said] == [MESSAGE]
        assert call.said[0].language == "en-GB"  # the persona's language and <Say> voice
        assert call.said[0].at >= call.beep_at - call.created
        assert call.statuses[-1][1] == "completed" and call.statuses[-1][0] >= call.said[0].ended_at
        assert call.stream is None and emulator.sessions_total == 0  # no Gemini session
        rows = await statuses(tmp_path, call.sid)
        assert rows[-1]["status"] == "completed" and rows[-1]["answered_by"] == "machine_end_beep"


async def test_a_machine_is_hung_up_on_without_a_session(
    make_server, make_emulator, tmp_path: Path
) -> None:
    emulator = await make_emulator()
    async with running_twilio_api(network()) as api:
        server = await start(make_server, api, tmp_path, emulator=emulator)
        status, placed = await dial(server, {"to": MACHINE, "persona": "front"})
        assert status == 201, placed
        assert await api.wait_all_ended(20)
        call = api.calls[placed["sid"]]
        assert call.answered_by == "machine_start" and call.status == "completed"
        assert call.twiml is not None and "<Hangup" in call.twiml and "<Connect" not in call.twiml
        assert call.said == [] and call.stream is None
        assert emulator.sessions_total == 0 and len(server.calls) == 0
        rows = await statuses(tmp_path, call.sid)
        assert [r["status"] for r in rows][-1] == "completed"


async def test_bad_dials_and_forged_callbacks_are_refused(make_server, tmp_path: Path) -> None:
    async with running_twilio_api(network()) as api:
        server = await start(make_server, api, tmp_path)
        status, body = await dial(server, {"to": "5551234", "persona": "front"})
        assert status == 400 and "E.164" in body["error"] and "'5551234'" in body["error"]
        status, body = await dial(server, {"to": PERSON, "persona": "nobody"})
        assert status == 400 and "front, voicemail" in body["error"]
        status, body = await dial(server, {"to": PERSON, "persona": "front", "params": {"x": "1"}})
        assert status == 400 and "does not declare" in body["error"]
        status, body = await dial(server, {"to": PERSON, "persona": "front"}, token=None)
        assert status == 401
        assert api.calls == {}  # nothing reached Twilio

        url = f"{server.url}/twilio/outbound/status?persona=front"
        form = {"CallSid": "CA" + "1" * 32, "CallStatus": "completed", "To": PERSON}
        good = twilio_signature(api.config.auth_token, url, form)
        forged = twilio_signature("not-the-token", url, form)
        async with aiohttp.ClientSession() as http:
            async with http.post(url, data=form, headers={"X-Twilio-Signature": forged}) as r:
                assert r.status == 403
            bad = {**form, "CallStatus": "exploded"}
            sig = twilio_signature(api.config.auth_token, url, bad)
            async with http.post(url, data=bad, headers={"X-Twilio-Signature": sig}) as r:
                assert r.status == 400 and "CallStatus" in await r.text()
            async with http.post(url, data=form, headers={"X-Twilio-Signature": good}) as r:
                assert r.status == 204
        rows = await statuses(tmp_path, "CA" + "1" * 32)
        assert [r["status"] for r in rows] == ["completed"]  # only the signed, valid one


async def test_a_campaign_of_20_keeps_its_concurrency_and_rate(
    make_server, tmp_path: Path, monkeypatch
) -> None:
    import io
    from argparse import Namespace

    from bot.outbound import campaign_cmd

    kinds = ["person"] * 3 + ["no-answer"] * 3 + ["machine"] * 10 + ["busy"] * 4
    numbers = {f"+1555888{i:04d}": kind for i, kind in enumerate(kinds)}
    plan = CallPlan().pause(0.5).hangup()  # the people: a real stream, kept short
    behaviours = {n: NumberBehaviour(k, plan=plan) for n, k in numbers.items()}  # type: ignore[arg-type]
    config = FakeTwilioConfig(numbers=behaviours, time_scale=NET_SCALE, cps=10)
    async with running_twilio_api(config) as api:
        server = await start(make_server, api, tmp_path)
        csv_path = tmp_path / "numbers.csv"
        csv_path.write_text("to\n" + "\n".join(numbers) + "\n")
        for name, value in {
            "TWILIO_ACCOUNT_SID": api.config.account_sid,
            "TWILIO_AUTH_TOKEN": api.config.auth_token,
            "TWILIO_API_BASE_URL": api.url,
            "PUBLIC_URL": server.url,
            "VOICEBOT_PERSONAS_DIR": str(tmp_path / "personas"),
        }.items():
            monkeypatch.setenv(name, value)
        out = io.StringIO()
        args = Namespace(
            csv=csv_path, persona="front", from_=None, personas=None, concurrency=5, cps=5.0,
            poll_secs=0.2, out=tmp_path / "results.csv",
        )  # fmt: skip
        t0 = time.monotonic()
        code = await asyncio.to_thread(campaign_cmd.run, args, out)
        took = time.monotonic() - t0
        assert code == 0, out.getvalue()
        assert len(api.calls) == 20 and api.refused_429 == 0
        assert api.max_open_calls <= 5, api.max_open_calls
        gaps = [b - a for a, b in zip(api.created_at, api.created_at[1:], strict=False)]
        assert min(gaps) >= 0.2 - 0.04, gaps  # 5 calls a second at most
        final = {c.to: (c.status, c.answered_by) for c in api.calls.values()}
        for number, kind in numbers.items():
            expected = {
                "machine": ("completed", "machine_start"),
                "busy": ("busy", None),
                "no-answer": ("no-answer", None),
                "person": ("completed", "human"),
            }
            assert final[number] == expected[kind], (number, final[number])  # fmt: skip
        results = (tmp_path / "results.csv").read_text().splitlines()
        assert len(results) == 21 and results[0].startswith("line,to,sid,status,answered_by")
        print(
            f"\ncampaign of 20: {took:.1f} s, at most {api.max_open_calls} open (limit 5), "
            f"smallest start gap {min(gaps):.3f} s (limit 0.2 s), 429s {api.refused_429}"
        )


async def test_a_campaign_with_wrong_credentials_places_no_call_and_says_so_once(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    import io
    from argparse import Namespace

    from bot.outbound import campaign_cmd

    config = FakeTwilioConfig(numbers={}, time_scale=NET_SCALE)
    async with running_twilio_api(config) as api:
        csv_path = tmp_path / "numbers.csv"
        csv_path.write_text("to\n+15558880001\n+15558880002\n")
        for name, value in {
            "TWILIO_ACCOUNT_SID": api.config.account_sid,
            "TWILIO_AUTH_TOKEN": "not-the-account-token",
            "TWILIO_API_BASE_URL": api.url,
            "PUBLIC_URL": "https://bot.example.com",
            "VOICEBOT_PERSONAS_DIR": str(write_personas(tmp_path / "personas")),
        }.items():
            monkeypatch.setenv(name, value)
        args = Namespace(
            csv=csv_path, persona="front", from_=None, personas=None, concurrency=1, cps=1.0,
            poll_secs=0.2, out=None,
        )  # fmt: skip
        code = await asyncio.to_thread(campaign_cmd.run, args, io.StringIO())
        assert code == 1
        assert not api.calls
    err = capsys.readouterr().err
    assert err.count("voicebot campaign: no call placed:") == 1, err
    assert "20003" in err, err  # Twilio's "authenticate" error, as the fake answers it
