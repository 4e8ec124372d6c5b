"""Function calls of one Live session: which tools are async, and each result as the model takes it.

``ToolBook`` remembers the name of each call the model made (results carry only its id) and
which tools were registered as async (``cancel_on_interruption=False``: declared NON_BLOCKING
on models that support it). ``response(frame)`` turns a Pipecat ``FunctionCallResultFrame``
into the ``FunctionResponse`` for ``send_tool_response``, as Pipecat's Gemini service did: a
result's JSON (``"COMPLETED"`` for none) as the response dict; NON_BLOCKING calls get a
``scheduling`` hint (``WHEN_IDLE``, or ``SILENT`` when the model should not answer it) and
``willContinue`` (False on the final result, which closes the call).
"""

from __future__ import annotations

import json

from google.genai.types import FunctionResponse, FunctionResponseScheduling
from loguru import logger
from pipecat.adapters.llm.services.gemini_live_adapter import GeminiLiveLLMAdapter
from pipecat.frames.frames import FunctionCallResultFrame


class ToolBook:
    """The call's tool bookkeeping (see the module docstring).

    Args:
        non_blocking: The model supports NON_BLOCKING function declarations.
    """

    def __init__(self, non_blocking: bool) -> None:
        self.non_blocking = non_blocking
        self.async_tools: set[str] = set()
        self._names: dict[str, str] = {}
        self._done: set[str] = set()

    def called(self, tool_call_id: str, name: str) -> None:
        """The model called ``name`` as ``tool_call_id``."""
        self._names[tool_call_id] = name

    def reset(self) -> None:
        """A new connection: calls of the old one are moot."""
        self._names.clear()
        self._done.clear()

    def response(self, frame: FunctionCallResultFrame) -> FunctionResponse | None:
        """The response to send for ``frame``; None when nothing is to be sent."""
        props = frame.properties
        is_final = props.is_final if props is not None else True
        if frame.tool_call_id in self._done:
            return None
        if not is_final and not self.non_blocking:
            logger.warning("this model takes one result per call: dropped an intermediate one")
            return None
        run_llm = props.run_llm if props is not None else None
        if run_llm is None:
            run_llm = frame.run_llm if frame.run_llm is not None else True
        name = self._names.get(frame.tool_call_id, "tool_call_result")
        result = json.dumps(frame.result, ensure_ascii=False) if frame.result else "COMPLETED"
        payload = GeminiLiveLLMAdapter.to_function_response_dict(result)
        non_blocking = self.non_blocking and name in self.async_tools
        scheduling = ("WHEN_IDLE" if run_llm else "SILENT") if non_blocking else None
        if scheduling:
            payload = {**payload, "scheduling": scheduling}
        response = FunctionResponse(name=name, id=frame.tool_call_id, response=payload)
        if scheduling:
            # The guides put scheduling in the response, the API reference in a field: both.
            response.scheduling = FunctionResponseScheduling(scheduling)
            response.will_continue = not is_final
        if is_final:
            self._done.add(frame.tool_call_id)
        return response
