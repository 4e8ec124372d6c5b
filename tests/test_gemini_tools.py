"""``ToolBook``: tool results as the Live API takes them (names, NON_BLOCKING scheduling)."""

from __future__ import annotations

import pytest
from pipecat.frames.frames import FunctionCallResultFrame

from pipelines.gemini.tools import ToolBook

pytestmark = pytest.mark.unit


def _result(call_id: str, result: object, run_llm: bool | None = None) -> FunctionCallResultFrame:
    return FunctionCallResultFrame(
        function_name="ignored", tool_call_id=call_id, arguments={}, result=result, run_llm=run_llm
    )


def test_blocking_result_is_named_and_sent_once() -> None:
    book = ToolBook(non_blocking=True)
    book.called("fc-1", "transfer_call")
    response = book.response(_result("fc-1", {"status": "ok"}))
    assert response is not None
    assert (response.name, response.id, response.response) == ("transfer_call", "fc-1",
                                                                {"status": "ok"})  # fmt: skip
    assert response.scheduling is None and response.will_continue is None
    assert book.response(_result("fc-1", {"status": "ok"})) is None  # already settled


def test_async_tool_gets_scheduling_and_closes_the_call() -> None:
    book = ToolBook(non_blocking=True)
    book.async_tools.add("end_call")
    book.called("fc-2", "end_call")
    response = book.response(_result("fc-2", None, run_llm=False))
    assert response is not None
    assert response.response == {"value": "COMPLETED", "scheduling": "SILENT"}
    assert response.scheduling is not None and response.scheduling.value == "SILENT"
    assert response.will_continue is False


def test_async_tool_on_a_blocking_only_model_is_plain() -> None:
    book = ToolBook(non_blocking=False)
    book.async_tools.add("end_call")
    response = book.response(_result("fc-3", {"a": 1}))
    assert response is not None
    assert response.name == "tool_call_result"  # an id the model never issued
    assert response.scheduling is None
