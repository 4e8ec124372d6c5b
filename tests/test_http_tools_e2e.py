"""Persona HTTP tools in a real call: the model calls one, the service answers or hangs.

The real server, SDK and Pipecat talk to the Live API emulator over loopback; the emulator
scripts a ``toolCall`` of the persona's ``find_slots`` after the caller's first turn, the
example booking service (``sim.tool_server``, with its realistic latency) answers it, and the
call's record (SQLite in the test's folder) keeps what the tool call came to.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bot.app_keys import RECORDS
from bot.records.reader import get_call, tool_calls_of
from sim.caller import CallPlan, place_call
from sim.emulator import EmulatorConfig, LiveEmulator, ToolScript
from sim.testing import wait_until
from sim.tool_server import ToolServerFaults, running_tool_server

pytestmark = pytest.mark.e2e

FAILURE_TEXT = "Sorry, the calendar is not answering right now."
PERSONA = """\
model: gemini-3.8-live
voice: Charon
default: true
system_instruction: "You book appointments at the clinic."
greeting: {{mode: wait}}
barge_in: {{local_vad: true, greeting_grace_ms: 0}}
http_tools:
  - name: find_slots
    description: "The free appointment slots on one date."
    method: GET
    url: {url}/slots
    parameters:
      type: object
      properties:
        date: {{type: string, pattern: "^\\\\d{{4}}-\\\\d{{2}}-\\\\d{{2}}$"}}
      required: [date]
    headers: {{Authorization: {{env: TOOL_TEST_TOKEN, prefix: "Bearer "}}}}
    timeout_secs: {timeout}
    retries: 1
    say_while_waiting: "Let me check the calendar."
    say_on_failure: "{failure}"
    behavior: {behavior}
"""


def personas(tmp_path: Path, url: str, timeout: float, behavior: str = "BLOCKING") -> Path:
    folder = tmp_path / "personas"
    folder.mkdir()
    text = PERSONA.format(url=url, timeout=timeout, failure=FAILURE_TEXT, behavior=behavior)
    (folder / "booking.yaml").write_text(text)
    return folder


def tool_responses(emulator: LiveEmulator) -> list[dict[str, Any]]:
    """Every function response the emulator received."""
    out = []
    for records in emulator.recordings.values():
        for r in records:
            body = r["msg"].get("tool_response") or r["msg"].get("toolResponse")
            if body:
                out.extend(body.get("functionResponses") or body.get("function_responses") or [])
    return out


def emulator_config() -> EmulatorConfig:
    script = ToolScript(after_turn=1, name="find_slots", args={"date": "2026-12-07"})
    return EmulatorConfig(think_ms=300, tool_scripts=(script,))


PLAN = CallPlan().say("caller_question.wav").pause(3.5).hangup()


async def test_a_tool_call_reaches_the_service_and_its_result_the_model(
    make_emulator, make_server, tmp_path, monkeypatch
):
    monkeypatch.setenv("TOOL_TEST_TOKEN", "s3cret")
    async with running_tool_server(token="s3cret") as service:
        emu = await make_emulator(emulator_config())
        server = await make_server(
            emulator=emu,
            personas=personas(tmp_path, service.url, timeout=4),
            database_url=f"sqlite:///{tmp_path}/calls.db",
        )
        result = await place_call(server.url, PLAN)
        assert result.ok, result.failure

        # The service got the model's (valid) arguments, with the header from the environment.
        (request,) = service.requests
        assert request["method"] == "GET" and request["path"] == "/slots"
        assert request["query"] == {"date": "2026-12-07"}
        assert request["headers"]["Authorization"] == "Bearer s3cret"
        # The emulator got the service's answer as the function response, and answered it.
        (response,) = tool_responses(emu)
        assert response["name"] == "find_slots"
        assert response["response"]["result"]["slots"][:2] == ["09:00", "09:30"]
        assert "scheduling" not in response  # BLOCKING: the model waited for it
        setup = json.dumps(next(iter(emu.recordings.values()))[0]["msg"])
        assert "Before calling find_slots, tell the caller" in setup
        assert result.audio_played_secs > 2.0  # the announcement and the answer after the tool

        # The call's record has the tool call, its outcome and latency, and sizes only.
        writer = server.app[RECORDS]
        assert await wait_until(lambda: writer.stats()["written"] >= 1, 10)
        call, _ = await get_call(writer.database, result.call_sid)
        (row,) = await tool_calls_of(writer.database, call["id"])
        assert row["tool"] == "find_slots" and row["outcome"] == "ok"
        assert row["http_status"] == 200 and row["attempts"] == 1
        assert 0.05 <= row["latency_secs"] < 2.0  # the service's 75-300 ms, plus loopback
        assert row["args_bytes"] == len('{"date": "2026-12-07"}') and row["result_bytes"] > 100


async def test_a_tool_that_times_out_hands_the_model_its_failure_text(
    make_emulator, make_server, tmp_path, monkeypatch
):
    monkeypatch.setenv("TOOL_TEST_TOKEN", "s3cret")
    # Every answer held 5 s; the tool's budget is 1 s, retries included. NON_BLOCKING: the
    # model's answer plays meanwhile, and the failure comes to it to say when it is idle.
    async with running_tool_server(
        token="s3cret", faults=ToolServerFaults(slow_secs=5.0)
    ) as service:
        emu = await make_emulator(emulator_config())
        server = await make_server(
            emulator=emu,
            personas=personas(tmp_path, service.url, timeout=1, behavior="NON_BLOCKING"),
            database_url=f"sqlite:///{tmp_path}/calls.db",
        )
        result = await place_call(server.url, PLAN)
        assert result.ok, result.failure

        (response,) = tool_responses(emu)
        body = response["response"]
        assert body["status"] == "failed" and body["error"] == "no answer within 1 s"
        assert body["say_to_caller"] == FAILURE_TEXT
        assert body["instruction"] == f"Say exactly these words to the caller: {FAILURE_TEXT}"
        assert len(service.requests) == 1  # the one attempt used the whole budget
        assert response["scheduling"] == "WHEN_IDLE"  # NON_BLOCKING: said when the model is idle
        assert not response.get("willContinue")  # the final response
        assert result.audio_played_secs > 2.5  # the answer went on while the request hung

        writer = server.app[RECORDS]
        assert await wait_until(lambda: writer.stats()["written"] >= 1, 10)
        call, _ = await get_call(writer.database, result.call_sid)
        (row,) = await tool_calls_of(writer.database, call["id"])
        assert row["outcome"] == "timeout" and row["http_status"] is None
        assert 0.95 <= row["latency_secs"] < 1.5
