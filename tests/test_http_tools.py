"""Persona HTTP tools without sockets: YAML checks at load, argument checks, retries, timeouts.

The request side runs against a scripted stand-in for ``aiohttp.ClientSession`` (statuses,
connection errors, answers that take too long), so the retry and budget rules are checked
exactly; ``tests/test_http_tools_e2e.py`` runs the same code over loopback in a real call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pipelines.personas.loader import load_persona_file
from pipelines.personas.tools import HttpTool
from pipelines.tools import http_call
from pipelines.tools.call_tools import CallTools
from pipelines.tools.http_call import build_request, call_http_tool
from pipelines.tools.json_schema import argument_problems, schema_problems

pytestmark = [pytest.mark.unit, pytest.mark.timed]  # real timers: runs with the calls

SLOTS = {
    "type": "object",
    "properties": {
        "date": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"},
        "party": {"type": "integer", "minimum": 1, "maximum": 8},
        "kind": {"type": "string", "enum": ["checkup", "cleaning"]},
    },
    "required": ["date"],
}
PERSONA = """\
model: {model}
default: true
system_instruction: "Book appointments."
http_tools:
  - name: {name}
    description: "Free slots on a date."
    url: http://127.0.0.1:8095/slots
{extra}"""


def load(tmp_path: Path, environ: dict[str, str] | None = None, **fields: str) -> Any:
    values = {"model": "gemini-3.8-live", "name": "find_slots", "extra": ""} | fields
    file = tmp_path / "booking.yaml"
    file.write_text(PERSONA.format(**values))
    return load_persona_file(file, environ)


def tool(**update: Any) -> HttpTool:
    fields = {"name": "find_slots", "description": "d", "url": "http://svc/slots",
              "parameters": SLOTS, "method": "GET", "timeout_secs": 2.0, "retries": 2}  # fmt: skip
    return HttpTool.model_validate(fields | update)


# --- at load ---------------------------------------------------------------------------------


def test_a_valid_tool_loads_and_is_declared_with_its_schema(tmp_path: Path) -> None:
    extra = "    parameters: {type: object, properties: {date: {type: string}}, required: [date]}\n"
    result = load(tmp_path, extra=extra + '    say_while_waiting: "Let me look."\n')
    assert result.errors == [] and result.persona is not None
    from pipelines.personas import setup_message

    setup = setup_message(result.persona)["setup"]
    (declared,) = [f for t in setup["tools"] for f in t["functionDeclarations"]]
    assert declared["name"] == "find_slots" and declared["behavior"] == "BLOCKING"
    assert declared["parameters"]["required"] == ["date"]
    assert 'Before calling find_slots, tell the caller: "Let me look."' in declared["description"]
    assert "Before calling find_slots" in setup["systemInstruction"]["parts"][0]["text"]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("    parameters: {type: object, properties: {d: {oneOf: []}}}\n",
         "http_tools[0].parameters: at properties.d.type: got None"),
        ("    parameters: {type: object, additionalProperties: false}\n",
         "additionalProperties': not in the subset of JSON Schema the Live API takes; list"),
        ("    parameters: {type: string}\n", "expected 'object' at the top level"),
        ("    parameters: {type: object, properties: {n: {type: [string, 'null']}}}\n",
         "use nullable: true"),
        ("    parameters: {type: object, properties: {n: {type: string, minimum: 1}}}\n",
         "it applies to number or integer, not string"),
        ("    parameters: {type: object, properties: {a: {type: array}}}\n",
         "got an array without items"),
        ("    parameters: {type: object, properties: {}, required: [date]}\n",
         "required: got 'date', expected a name under properties (none)"),
        ("    method: FETCH\n", "http_tools[0].method: got 'FETCH', expected one of"),
        ("    timeout_secs: 0\n", "http_tools[0].timeout_secs: got 0"),
    ],
)  # fmt: skip
def test_a_bad_schema_or_field_is_a_load_error_naming_file_and_field(
    tmp_path: Path, extra: str, expected: str
) -> None:
    result = load(tmp_path, extra=extra)
    assert result.persona is None
    assert any(expected in e for e in result.errors), result.errors
    assert all(e.startswith(f"{tmp_path / 'booking.yaml'}:") for e in result.errors)


def test_names_must_not_clash_with_builtins_or_each_other(tmp_path: Path) -> None:
    result = load(tmp_path, name="end_call")
    assert any("end_call" in e and "built-in tool's name" in e for e in result.errors)
    twice = "  - {name: find_slots, description: again, url: 'http://x/y'}\n"
    result = load(tmp_path, extra=twice)
    assert any("got the name 'find_slots' twice" in e for e in result.errors), result.errors


def test_url_placeholders_must_name_parameters(tmp_path: Path) -> None:
    file = tmp_path / "booking.yaml"
    file.write_text(
        PERSONA.format(model="gemini-3.8-live", name="get_booking", extra="")
        .replace("/slots", "/bookings/{booking_id}")
    )  # fmt: skip
    result = load_persona_file(file)
    assert any("placeholder {booking_id}, expected a parameter name" in e for e in result.errors)


def test_an_unset_header_variable_is_a_load_error_with_the_fix(tmp_path: Path) -> None:
    extra = '    headers: {Authorization: {env: APPT_TOKEN, prefix: "Bearer "}}\n'
    result = load(tmp_path, environ={}, extra=extra)
    (error,) = result.errors
    assert error.startswith(f"{tmp_path / 'booking.yaml'}:")
    assert "http_tools[0].headers: Authorization.env: got 'APPT_TOKEN', which is not set" in error
    assert "fix: export APPT_TOKEN=" in error
    ok = load(tmp_path, environ={"APPT_TOKEN": "t0k"}, extra=extra)
    assert ok.errors == [] and ok.persona is not None
    found = ok.persona.http_tools[0].resolved_headers({"APPT_TOKEN": "t0k"}.get)
    assert found == {"Authorization": "Bearer t0k"}
    secret = load(tmp_path, extra="    headers: {X-Key: {env: lower_case}}\n")
    assert any("expected the NAME of an environment variable" in e for e in secret.errors)


def test_behavior_must_be_one_the_model_takes(tmp_path: Path) -> None:
    legacy = load(tmp_path, model="gemini-3.1-flash-live-preview",
                  extra="    behavior: non_blocking\n")  # fmt: skip
    assert any(
        "http_tools[0].behavior: got NON_BLOCKING" in e and "only blocking" in e
        for e in legacy.errors
    ), legacy.errors
    thinking = load(tmp_path, model="gemini-3.8-live-extended-thinking",
                    extra="    behavior: BLOCKING\n")  # fmt: skip
    assert any("got BLOCKING, expected NON_BLOCKING" in e for e in thinking.errors)
    mixed = load(tmp_path, extra="    behavior: NON_BLOCKING\n")
    assert mixed.errors == []


def test_the_shipped_appointments_persona_declares_its_tools() -> None:
    root = Path(__file__).parent.parent / "config" / "personas"
    result = load_persona_file(root / "appointments.yaml", {})
    assert result.errors == [] and result.persona is not None
    names = [t.name for t in result.persona.http_tools]
    assert names == ["find_slots", "book_slot"]


def test_schema_subset_checker_accepts_what_gemini_takes() -> None:
    assert schema_problems(SLOTS) == []
    item = {"type": "object", "properties": {"sku": {"type": "string"}}, "nullable": True}
    nested = {"type": "object", "properties": {"items": {"type": "array", "items": item}}}
    assert schema_problems(nested) == []
    any_of = {"type": "object", "properties": {"v": {"anyOf": [{"type": "string"},
                                                            {"type": "integer"}]}}}  # fmt: skip
    assert schema_problems(any_of) == []


# --- the model's arguments -------------------------------------------------------------------


def test_arguments_are_checked_against_the_schema() -> None:
    assert argument_problems(SLOTS, {"date": "2026-12-07", "party": 2, "kind": "checkup"}) == []
    problems = argument_problems(
        SLOTS, {"date": "next monday", "party": 12, "kind": "surgery", "room": 4}
    )
    assert problems == [
        "date: got 'next monday', expected text matching '^\\\\d{4}-\\\\d{2}-\\\\d{2}$'",
        "party: got 12, expected at most 8",
        "kind: got 'surgery', expected one of ['checkup', 'cleaning']",
        "room: got an unexpected argument, expected only date, party, kind",
    ]
    assert argument_problems(SLOTS, {}) == ["date: missing, expected a value (it is required)"]
    assert argument_problems(SLOTS, {"date": 20261207}) == ["date: got 20261207, expected string"]


async def test_invalid_arguments_get_the_problems_back_and_no_request() -> None:
    session = ScriptedSession([])
    tools = call_tools(tool(), session)
    outcome = await tools.run(tools.tools[0], {"date": "tomorrow"})
    assert outcome.outcome == "invalid_arguments" and session.calls == []
    assert outcome.response["status"] == "invalid_arguments"
    assert "date: got 'tomorrow'" in outcome.response["errors"][0]
    assert "Call find_slots again" in outcome.response["instruction"]


def test_the_request_carries_arguments_in_path_query_or_body() -> None:
    get = tool(url="http://svc/clinics/{clinic}/slots", parameters={
        "type": "object", "properties": {"clinic": {"type": "string"}, "date": {"type": "string"},
                                         "late": {"type": "boolean"}}})  # fmt: skip
    request = build_request(get, {"clinic": "Main St/2", "date": "2026-12-07", "late": True})
    assert request == {"method": "GET", "url": "http://svc/clinics/Main%20St%2F2/slots",
                       "params": {"date": "2026-12-07", "late": "true"}}  # fmt: skip
    post = tool(method="POST", url="http://svc/bookings")
    assert build_request(post, {"date": "2026-12-07", "party": 2}) == {
        "method": "POST", "url": "http://svc/bookings", "json": {"date": "2026-12-07", "party": 2}
    }  # fmt: skip


# --- the request: retries and the time budget ------------------------------------------------


class Answer:
    """A scripted response: a status and a body after ``delay`` seconds."""

    def __init__(self, status: int, body: Any = None, delay: float = 0.0) -> None:
        self.status = status
        self.body = json.dumps(body).encode() if not isinstance(body, bytes) else body
        self.delay = delay
        self.content_type = "application/json"
        self.content = self

    async def iter_chunked(self, size: int) -> AsyncIterator[bytes]:
        for i in range(0, len(self.body), size):
            yield self.body[i : i + size]


class ScriptedSession:
    """Stands in for ``aiohttp.ClientSession.request``: one scripted outcome per attempt."""

    def __init__(self, script: list[Answer | Exception]) -> None:
        self.script = list(script)
        self.calls: list[dict[str, Any]] = []

    @contextlib.asynccontextmanager
    async def request(self, **kwargs: Any) -> AsyncIterator[Answer]:
        self.calls.append(kwargs)
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        total = kwargs["timeout"].total
        if step.delay > total:
            await asyncio.sleep(total)
            raise TimeoutError
        await asyncio.sleep(step.delay)
        yield step


def call_tools(t: HttpTool, session: Any) -> CallTools:
    from pipelines.ports import NO_CALL_METRICS

    return CallTools((t,), model_default_async=False, http=session, env_value=lambda _n: None,
                     metrics=NO_CALL_METRICS, started=0.0, call_sid="CA1")  # fmt: skip


async def test_a_json_answer_is_the_result() -> None:
    session = ScriptedSession([Answer(200, {"slots": ["09:00", "09:30"]})])
    outcome = await call_http_tool(session, tool(), {"date": "2026-12-07"}, {"X-Key": "k"})  # type: ignore[arg-type]
    assert outcome.outcome == "ok" and outcome.attempts == 1 and outcome.http_status == 200
    assert outcome.response == {"result": {"slots": ["09:00", "09:30"]}}
    assert session.calls[0]["headers"] == {"X-Key": "k"}
    assert session.calls[0]["params"] == {"date": "2026-12-07"}


async def test_connection_errors_and_5xx_are_retried_within_the_budget() -> None:
    refused = aiohttp.ClientConnectionError("refused")
    session = ScriptedSession([refused, Answer(503, {"error": "busy"}), Answer(200, {"ok": 1})])
    started = asyncio.get_running_loop().time()
    outcome = await call_http_tool(session, tool(), {"date": "2026-12-07"}, {})  # type: ignore[arg-type]
    took = asyncio.get_running_loop().time() - started
    assert outcome.outcome == "ok" and outcome.attempts == 3
    assert 0.55 <= took < 1.0  # backoffs of 0.2 s and 0.4 s


async def test_a_4xx_is_final_and_its_detail_goes_to_the_model() -> None:
    session = ScriptedSession([Answer(409, {"error": "09:00 is not free"}), Answer(200, {})])
    outcome = await call_http_tool(session, tool(), {"date": "2026-12-07"}, {})  # type: ignore[arg-type]
    assert outcome.outcome == "rejected" and outcome.attempts == 1
    assert outcome.response["http_status"] == 409
    assert "09:00 is not free" in outcome.response["detail"]
    assert "say_to_caller" not in outcome.response


async def test_retries_run_out_then_the_failure_text_is_handed_over() -> None:
    session = ScriptedSession([Answer(500), Answer(502), Answer(503), Answer(200)])
    failing = tool(say_on_failure="The calendar is down, sorry.")
    outcome = await call_http_tool(session, failing, {"date": "2026-12-07"}, {})  # type: ignore[arg-type]
    assert outcome.outcome == "unavailable" and outcome.attempts == 3  # 1 + retries: 2
    assert outcome.response["status"] == "failed"
    assert outcome.response["say_to_caller"] == "The calendar is down, sorry."
    assert (
        "Say exactly these words to the caller: The calendar" in (outcome.response["instruction"])
    )


async def test_a_slow_service_times_out_at_the_budget_not_per_attempt() -> None:
    session = ScriptedSession([Answer(200, {}, delay=5.0), Answer(200, {}, delay=5.0)])
    slow = tool(timeout_secs=0.5, retries=3)
    started = asyncio.get_running_loop().time()
    outcome = await call_http_tool(session, slow, {"date": "2026-12-07"}, {})  # type: ignore[arg-type]
    took = asyncio.get_running_loop().time() - started
    assert outcome.outcome == "timeout" and outcome.attempts == 1
    assert 0.45 <= took < 0.7
    assert outcome.response["error"] == "no answer within 0.5 s"


async def test_a_big_answer_is_cut_and_marked() -> None:
    session = ScriptedSession([Answer(200, b"x" * (http_call.MAX_RESULT_BYTES * 3))])
    outcome = await call_http_tool(session, tool(), {"date": "2026-12-07"}, {})  # type: ignore[arg-type]
    assert outcome.outcome == "ok" and outcome.response["truncated"] is True
    assert len(outcome.response["result"]) == http_call.MAX_RESULT_BYTES
    assert outcome.result_bytes == http_call.MAX_RESULT_BYTES * 3


async def test_each_call_is_recorded_with_outcome_latency_and_sizes() -> None:
    class Params:
        arguments = {"date": "2026-12-07"}
        results: list[Any] = []

        async def result_callback(self, result: Any, **_: Any) -> None:
            self.results.append(result)

    seen: list[tuple[str, str, float]] = []

    class Metrics:
        def tool_call(self, name: str, outcome: str, latency: float) -> None:
            seen.append((name, outcome, latency))

    session = ScriptedSession([Answer(200, {"slots": []}, delay=0.05)])
    tools = call_tools(tool(), session)
    tools._metrics = Metrics()  # type: ignore[assignment]
    params = Params()
    await tools._handle(tools.tools[0], params)
    (record,) = tools.records
    assert record.tool == "find_slots" and record.outcome == "ok" and record.attempts == 1
    assert 0.05 <= record.latency_secs < 0.5
    assert record.args_bytes == len('{"date": "2026-12-07"}') and record.result_bytes == 13
    assert params.results == [{"result": {"slots": []}}]
    assert seen and seen[0][:2] == ("find_slots", "ok")
