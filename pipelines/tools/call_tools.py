"""A call's HTTP tools: registered on its Live service, run off the audio path, logged.

``CallTools.register`` gives the Live service one handler per ``http_tools`` entry of the
persona, NON_BLOCKING ones with ``cancel_on_interruption=False`` (the service then sends their
results with ``scheduling: WHEN_IDLE``), BLOCKING ones cancelled when the caller barges in
(the Live API cancels the call too). A handler runs as its own task in Pipecat's function-call
machinery, so audio keeps flowing while the request is out. It checks the model's arguments
against the tool's schema first (a wrong call gets the problems back, and no request is made),
then makes the request (``http_call``) and hands the response to the model.

Every call ends as one ``ToolCallRecord`` (name, outcome, latency, attempts, sizes; never the
arguments or the result, which may carry what the caller said) in ``records``, for the call's
record (``bot.records``), and one ``CallMetrics.tool_call`` (``voicebot_tool_calls_total``,
``voicebot_tool_latency_seconds``). A failure is one WARNING line, with the CallSid and no
contents.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from loguru import logger

from pipelines.personas.tools import HttpTool, is_async
from pipelines.ports import CallMetrics
from pipelines.tools.http_call import FAILURES, ToolOutcome, call_http_tool, failure
from pipelines.tools.json_schema import argument_problems


@dataclass(frozen=True)
class ToolCallRecord:
    """One tool call of a call, as its record keeps it.

    Attributes:
        tool: The function name.
        outcome: ``ok``, ``invalid_arguments``, ``rejected`` (a 4xx), ``timeout``,
            ``unavailable`` (5xx/429), ``unreachable``, ``misconfigured`` or ``cancelled``.
        at_secs: When the model called it, from the call's start.
        latency_secs: From the call to the response handed back.
        attempts: HTTP requests made.
        http_status: The last HTTP status, if an answer came.
        args_bytes: Size of the arguments as JSON.
        result_bytes: Size of the body received.
    """

    tool: str
    outcome: str
    at_secs: float
    latency_secs: float
    attempts: int = 0
    http_status: int | None = None
    args_bytes: int = 0
    result_bytes: int = 0


class CallTools:
    """One call's HTTP tools (see the module docstring).

    Args:
        tools: The persona's ``http_tools``.
        model_default_async: The model runs tools NON_BLOCKING unless told otherwise
            (``Persona.tools_async``).
        http: The server's shared client session (None: every call fails ``misconfigured``).
        env_value: Environment lookup for ``{env: NAME}`` headers.
        metrics: The call's metrics.
        started: The call's start (``time.monotonic()``), for ``at_secs``.
        call_sid: For log lines.
    """

    def __init__(
        self,
        tools: tuple[HttpTool, ...],
        *,
        model_default_async: bool,
        http: aiohttp.ClientSession | None,
        env_value: Callable[[str], str | None],
        metrics: CallMetrics,
        started: float,
        call_sid: str,
    ) -> None:
        self.tools = tools
        self._default_async = model_default_async
        self._http = http
        self._env_value = env_value
        self._metrics = metrics
        self._started = started
        self._call_sid = call_sid
        self.records: list[ToolCallRecord] = []

    def register(self, llm: Any) -> None:
        """Register one handler per tool on the call's Live service."""
        for tool in self.tools:
            llm.register_function(
                tool.name,
                functools.partial(self._handle, tool),
                cancel_on_interruption=not is_async(tool, self._default_async),
            )

    async def _handle(self, tool: HttpTool, params: Any) -> None:
        began = time.monotonic()
        arguments = dict(params.arguments or {})
        args_bytes = len(json.dumps(arguments, ensure_ascii=False).encode())
        try:
            outcome = await self.run(tool, arguments)
        except asyncio.CancelledError:
            self._record(tool, began, ToolOutcome("cancelled", {}), args_bytes)
            raise
        self._record(tool, began, outcome, args_bytes)
        await params.result_callback(outcome.response)

    async def run(self, tool: HttpTool, arguments: dict[str, Any]) -> ToolOutcome:
        """Check the arguments, then make the request; never raises (but cancellation)."""
        problems = argument_problems(tool.parameters, arguments)
        if problems:
            return ToolOutcome(
                "invalid_arguments",
                {
                    "status": "invalid_arguments",
                    "errors": problems[:10],
                    "instruction": f"Nothing was done. Call {tool.name} again with arguments "
                    "that fix these errors, asking the caller for what is missing.",
                },
                error="invalid arguments",
            )
        if self._http is None:
            return failure(tool, "misconfigured", "the server has no HTTP client for tools")
        try:
            headers = tool.resolved_headers(self._env_value)
        except LookupError as e:
            return failure(tool, "misconfigured", f"environment variable {e.args[0]} is not set")
        try:
            return await call_http_tool(self._http, tool, arguments, headers)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug or an odd URL must not end the call: the model hears it
            logger.exception(f"call {self._call_sid}: tool {tool.name} failed")
            return failure(tool, "unreachable", type(e).__name__)

    def _record(self, tool: HttpTool, began: float, result: ToolOutcome, args_bytes: int) -> None:
        outcome = result.outcome
        now = time.monotonic()
        latency = now - began
        self.records.append(
            ToolCallRecord(
                tool=tool.name,
                outcome=outcome,
                at_secs=round(began - self._started, 3),
                latency_secs=round(latency, 4),
                attempts=result.attempts,
                http_status=result.http_status,
                args_bytes=args_bytes,
                result_bytes=result.result_bytes,
            )
        )
        self._metrics.tool_call(tool.name, outcome, latency)
        if outcome in FAILURES:
            logger.warning(
                f"call {self._call_sid}: tool {tool.name} {outcome}: {result.error} "
                f"({latency * 1000:.0f} ms, {result.attempts} attempt(s))"
            )
        else:
            logger.debug(f"tool {tool.name}: {outcome} in {latency * 1000:.0f} ms")
