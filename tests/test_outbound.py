"""Outbound calls without a server: the scheduler, the REST client's errors, the persona section."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from bot.outbound.answer import machine_twiml
from bot.outbound.campaign import Campaign, CampaignRow, read_rows
from bot.outbound.placing import DialError, DialRequest, call_form, check_request
from bot.twilio_rest import TwilioApiError, TwilioRest
from pipelines.personas import PersonaConfigError, load_personas
from pipelines.personas.schema import Persona
from sim.twilio_api import FakeTwilioConfig, running_twilio_api

pytestmark = pytest.mark.unit


def persona(**outbound: object) -> Persona:
    return Persona(
        id="p", system_instruction="x", language="es-ES", numbers=("+15550001111",),
        custom_parameters={"campaign": "none"}, outbound=outbound,
    )  # fmt: skip


# the scheduler ------------------------------------------------------------------------------


async def test_the_scheduler_keeps_concurrency_and_spacing_and_survives_refusals() -> None:
    open_now, max_open, placed_at = set(), 0, []
    polls: dict[str, int] = {}

    async def place(row: CampaignRow) -> dict:
        nonlocal max_open
        if row.to.endswith("13"):
            raise TwilioApiError("POST Calls.json", 400, 21211, "Invalid 'To' Phone Number", None)
        placed_at.append(time.monotonic())
        sid = f"CA{row.line:032d}"
        open_now.add(sid)
        max_open = max(max_open, len(open_now))
        polls[sid] = row.line % 3  # ends after 0, 1 or 2 more polls
        return {"sid": sid, "status": "queued"}

    async def fetch(sid: str) -> dict:
        polls[sid] -= 1
        if polls[sid] < 0:
            open_now.discard(sid)
            return {"sid": sid, "status": "completed", "answered_by": "human", "duration": "7"}
        return {"sid": sid, "status": "in-progress"}

    rows = [CampaignRow(i + 2, f"+155500000{i:02d}") for i in range(20)]
    seen = []
    campaign = Campaign(place, fetch, concurrency=3, cps=50, poll_secs=0.01)
    results = await asyncio.wait_for(campaign.run(rows, seen.append), 10)
    assert max_open <= 3 and campaign.max_open <= 3
    gaps = [b - a for a, b in zip(placed_at, placed_at[1:], strict=False)]
    assert min(gaps) >= 0.02 - 0.002
    refused = [r for r in results if r.sid is None]
    assert len(refused) == 1 and refused[0].row.to.endswith("13")
    assert refused[0].status == "not-placed" and "21211" in (refused[0].error or "")
    done = [r for r in results if r.sid]
    assert all(r.status == "completed" and r.answered_by == "human" for r in done)
    assert all(r.duration_secs == 7 for r in done) and len(seen) == 20


def test_limits_must_be_positive() -> None:
    async def never(_: object) -> dict:
        raise AssertionError

    with pytest.raises(ValueError, match="concurrency"):
        Campaign(never, never, concurrency=0, cps=1)
    with pytest.raises(ValueError, match="cps"):
        Campaign(never, never, concurrency=1, cps=0)


def test_campaign_csv_errors_name_the_line_and_field() -> None:
    rows = read_rows("to,campaign\n+15550001111,spring\n+15550002222,\n", "n.csv")
    assert [(r.line, r.to, dict(r.params)) for r in rows] == [
        (2, "+15550001111", {"campaign": "spring"}), (3, "+15550002222", {}),
    ]  # fmt: skip
    with pytest.raises(ValueError, match=r"n.csv: expected a header line with a 'to' column"):
        read_rows("number\n+15550001111\n", "n.csv")
    with pytest.raises(ValueError, match=r"n.csv:3: to: got '555-1234', expected an E.164"):
        read_rows("to\n+15550001111\n555-1234\n", "n.csv")
    with pytest.raises(ValueError, match="no rows"):
        read_rows("to\n", "n.csv")


# the REST client against the fake Twilio API ---------------------------------------------


async def test_the_client_turns_twilio_errors_into_clear_ones_and_retries_429() -> None:
    config = FakeTwilioConfig(time_scale=0.01, cps=5.0, api_latency_secs=0.01)
    async with running_twilio_api(config) as api, aiohttp.ClientSession() as http:
        rest = TwilioRest(
            http, config.account_sid, config.auth_token, api.url, retry_first_secs=0.05
        )
        form = [("To", "+15550001111"), ("From", "+15550002222"), ("Url", "http://127.0.0.1:9/")]
        first = await rest.create_call(form)
        second = await rest.create_call(form)  # within the second: 429 20429, waited out
        assert first["sid"] != second["sid"] and rest.retried_429 >= 1
        assert api.refused_429 == rest.retried_429 and len(api.calls) == 2
        assert api.created_at[1] - api.created_at[0] >= 0.19  # the account's 5 a second

        with pytest.raises(TwilioApiError) as bad_to:
            await rest.create_call([("To", "12"), *form[1:]])
        assert bad_to.value.status == 400 and bad_to.value.code == 21211
        assert "error 21211: Invalid 'To' Phone Number" in str(bad_to.value)
        assert "https://www.twilio.com/docs/errors/21211" in str(bad_to.value)

        wrong = TwilioRest(http, config.account_sid, "wrong", api.url)
        with pytest.raises(TwilioApiError, match=r"HTTP 401, error 20003: Authenticate"):
            await wrong.fetch_call(first["sid"])
        with pytest.raises(TwilioApiError) as missing:
            await rest.fetch_call("CA" + "0" * 32)
        assert missing.value.code == 20404

        impatient = TwilioRest(
            http, config.account_sid, config.auth_token, api.url,
            retry_first_secs=0.01, retry_attempts=2,
        )  # fmt: skip
        await asyncio.sleep(0.2)
        await impatient.create_call(form)
        with pytest.raises(TwilioApiError) as limited:
            await impatient.create_call(form)
        assert limited.value.too_many_requests and limited.value.code == 20429

        assert (await rest.fetch_call(first["sid"]))["direction"] == "outbound-api"
        listed = await rest.list_calls(To="+15550001111")
        assert {c["sid"] for c in listed} >= {first["sid"], second["sid"]}
        assert await rest.hang_up(first["sid"])


async def test_an_unreachable_api_is_a_clear_error() -> None:
    async with aiohttp.ClientSession() as http:
        rest = TwilioRest(http, "AC1", "t", "http://127.0.0.1:9")
        with pytest.raises(Exception, match=r"Twilio REST GET Calls/CA1.json failed: Client"):
            await rest.fetch_call("CA1")
        assert not await rest.hang_up("CA1")


# the persona section, the dial's checks and form, the machine TwiML -----------------------


def test_leave_message_needs_a_message_at_load_time(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        'default: true\nsystem_instruction: "x"\noutbound:\n  on_machine: leave_message\n'
    )
    with pytest.raises(PersonaConfigError) as e:
        load_personas(tmp_path)
    assert "a.yaml:3: outbound: on_machine: got 'leave_message'" in str(
        e.value
    ) and "machine_message" in str(e.value)
    (tmp_path / "a.yaml").write_text(
        'default: true\nsystem_instruction: "x"\noutbound: {amd_timeout_secs: 2}\n'
    )
    with pytest.raises(PersonaConfigError, match="amd_timeout_secs"):
        load_personas(tmp_path)


def test_the_dial_form_asks_for_the_persona_amd_and_every_status() -> None:
    p = persona(on_machine="leave_message", machine_message="Call us back.")
    form = call_form(
        DialRequest("+15550003333", "p", None, {"campaign": "a b"}), p, "+15550001111",
        "https://bot.example.com/",
    )  # fmt: skip
    assert ("Url", "https://bot.example.com/twilio/voice?persona=p&campaign=a+b") in form
    assert ("StatusCallback", "https://bot.example.com/twilio/outbound/status?persona=p") in form
    events = [v for k, v in form if k == "StatusCallbackEvent"]
    assert events == ["initiated", "ringing", "answered", "completed"]
    assert ("MachineDetection", "DetectMessageEnd") in form
    assert ("MachineDetection", "Enable") in call_form(
        DialRequest("+15550003333", "p"), persona(), "+15550001111", "https://b.example"
    )


def test_bad_dials_say_what_and_how_to_fix() -> None:
    from pipelines.personas import PersonaSet

    personas = PersonaSet({"p": persona()}, persona())
    assert check_request(DialRequest("+15550003333", "p"), personas)[1] == "+15550001111"
    with pytest.raises(DialError, match=r"to: got '0044 20', expected an E.164"):
        check_request(DialRequest("0044 20", "p"), personas)
    with pytest.raises(DialError, match=r"persona: got 'q', expected one of .*\(p\)"):
        check_request(DialRequest("+15550003333", "q"), personas)
    with pytest.raises(DialError, match=r"param 'x': persona 'p' does not declare it"):
        check_request(DialRequest("+15550003333", "p", params={"x": "1"}), personas)
    with pytest.raises(DialError, match=r"from: got '123'"):
        check_request(DialRequest("+15550003333", "p", "123"), personas)


def test_machines_get_the_persona_answer_people_get_the_stream() -> None:
    leave = persona(on_machine="leave_message", machine_message="Llámenos, por favor.")
    twiml = machine_twiml(leave, {"CallSid": "CA1", "AnsweredBy": "machine_end_beep"})
    assert twiml is not None and ">Llámenos, por favor.</Say>" in twiml
    assert 'language="es-ES"' in twiml and f'voice="{leave.texts.say_voice}"' in twiml
    assert twiml.endswith("<Hangup /></Response>")
    fax = machine_twiml(leave, {"AnsweredBy": "fax"})
    assert fax is not None and "<Say" not in fax and "<Hangup" in fax
    hang_up = machine_twiml(persona(), {"AnsweredBy": "machine_start"})
    assert hang_up is not None and "<Say" not in hang_up
    for person in ({"AnsweredBy": "human"}, {"AnsweredBy": "unknown"}, {}):
        assert machine_twiml(leave, person) is None
