"""A persona mapped onto Pipecat's ``GeminiLiveLLMService`` and the Live API ``setup`` message.

``setup_message`` does not re-implement the wire format: it builds the service exactly as a
call does, lets the service assemble its ``LiveConnectConfig`` (``_connect``), and converts that
with the SDK's own converter, as ``AsyncLive.connect`` does. No socket is opened.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Coroutine, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from google.genai.types import LiveConnectConfig
    from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
    from pipecat.services.google.gemini_live.llm import GeminiLiveLLMSettings

    from pipelines.personas.schema import Persona

from pipelines.personas.variables import call_variables

END_CALL = "end_call"
TRANSFER_CALL = "transfer_call"


def live_settings(persona: Persona, system_instruction: str) -> GeminiLiveLLMSettings:
    """``GeminiLiveLLMService.Settings`` carrying every session field of ``persona``."""
    from google.genai.types import (
        EndSensitivity,
        ProactivityConfig,
        StartSensitivity,
        ThinkingConfig,
        ThinkingLevel,
    )
    from pipecat.services.google.gemini_live.llm import (
        ContextWindowCompressionParams,
        GeminiLiveLLMService,
        GeminiModalities,
        GeminiVADParams,
    )

    s = persona.session
    kwargs: dict[str, Any] = {
        "model": f"models/{persona.model.removeprefix('models/')}",
        "voice": persona.voice,
        "modalities": GeminiModalities.AUDIO,
        "system_instruction": system_instruction,
        "temperature": s.temperature,
        "enable_affective_dialog": s.affective_dialog,
    }
    if persona.language is not None:
        kwargs["language"] = persona.language
    if s.thinking is not None:
        if s.thinking.level is not None:
            kwargs["thinking"] = ThinkingConfig(thinking_level=ThinkingLevel(s.thinking.level))
        else:
            kwargs["thinking"] = ThinkingConfig(thinking_budget=s.thinking.budget)
    if s.context_window_compression is not None:
        kwargs["context_window_compression"] = ContextWindowCompressionParams(
            enabled=True, trigger_tokens=s.context_window_compression.trigger_tokens
        )
    if s.proactive_audio is not None:
        kwargs["proactivity"] = ProactivityConfig(proactive_audio=s.proactive_audio)
    ad = s.activity_detection
    kwargs["vad"] = GeminiVADParams(
        disabled=ad.disabled,
        start_sensitivity=(
            StartSensitivity(f"START_SENSITIVITY_{ad.start_sensitivity.upper()}")
            if ad.start_sensitivity
            else None
        ),
        end_sensitivity=(
            EndSensitivity(f"END_SENSITIVITY_{ad.end_sensitivity.upper()}")
            if ad.end_sensitivity
            else None
        ),
        prefix_padding_ms=ad.prefix_padding_ms,
        silence_duration_ms=ad.silence_duration_ms,
    )
    return GeminiLiveLLMService.Settings(**kwargs)


def tools_schema(persona: Persona) -> ToolsSchema | None:
    """The enabled built-in tools as a Pipecat ``ToolsSchema`` (``None`` if none)."""
    from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
    from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema

    reason = {"reason": {"type": "string", "description": "Why, in a few words."}}
    functions = []
    end_call = persona.tools.end_call
    if end_call is not None:
        hint = f" {end_call.goodbye}" if end_call.goodbye else ""
        functions.append(
            FunctionSchema(
                name=END_CALL,
                description=(
                    "End the phone call. Call this only when the conversation is over. The call "
                    f"hangs up after your goodbye has played.{hint}"
                ),
                properties=reason,
                required=[],
            )
        )
    transfer = persona.tools.transfer_call
    if transfer is not None:
        functions.append(
            FunctionSchema(
                name=TRANSFER_CALL,
                description=(
                    "Transfer the caller to a human colleague when they ask for a person or you "
                    "cannot help. Tell the caller you are transferring them first."
                ),
                properties=reason,
                required=[],
            )
        )
    return ToolsSchema(standard_tools=functions) if functions else None


def enabled_tools(persona: Persona) -> list[str]:
    """Names of the enabled built-in tools.

    Register each handler with ``cancel_on_interruption=not persona.tools_async``.
    """
    tools = persona.tools
    return [
        name
        for name, tool in ((END_CALL, tools.end_call), (TRANSFER_CALL, tools.transfer_call))
        if tool is not None
    ]


def adjust_connect_config(persona: Persona, config: LiveConnectConfig) -> LiveConnectConfig:
    """Apply the persona fields Pipecat's Settings cannot express (transcription off).

    Pipecat always asks for both transcriptions; a service subclass passes its config through
    this in ``_connection_task_handler`` before connecting.
    """
    if not persona.session.input_transcription:
        config.input_audio_transcription = None
    if not persona.session.output_transcription:
        config.output_audio_transcription = None
    return config


def _drive(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends (no I/O) to completion without an event loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("setup assembly tried to wait for I/O; expected none")


def build_connect_config(
    persona: Persona, variables: Mapping[str, str] | None = None
) -> tuple[str, LiveConnectConfig]:
    """The model and ``LiveConnectConfig`` the Pipecat service would connect with."""
    from pipecat.services.google.gemini_live.llm import GeminiLiveLLMService

    if variables is None:
        variables = call_variables(
            persona, caller="+15550000001", called=(persona.numbers or ("+15550000002",))[0],
            custom={}, now=datetime(2026, 1, 1, 12, 0),
        )  # fmt: skip
    captured: dict[str, Any] = {}

    class _Capture(GeminiLiveLLMService):
        def create_task(self, coroutine: Any, name: str | None = None, context: Any = None) -> Any:
            coroutine.close()

        def _connection_task_handler(self, config: LiveConnectConfig) -> Any:  # type: ignore[override]
            captured["config"] = config

            async def _noop() -> None:
                return None

            return _noop()

        async def push_error(self, error_msg: str, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError(error_msg)

    service = _Capture(
        api_key="offline",
        settings=persona.live_settings(persona.render_system_instruction(variables)),
        tools=persona.tools_schema(),
    )
    for name in enabled_tools(persona):
        service.register_function(name, _no_handler, cancel_on_interruption=not persona.tools_async)
    _drive(service._connect())
    model = str(getattr(service._settings, "model"))  # noqa: B009 (mypy: untyped Settings)
    return model, adjust_connect_config(persona, captured["config"])


async def _no_handler(params: Any) -> None:
    await params.result_callback(None)


def setup_message(persona: Persona, variables: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The exact ``{"setup": {...}}`` JSON the SDK sends for this persona.

    Args:
        persona: The persona.
        variables: Template values (``call_variables``); sample values when omitted.
    """
    from google import genai
    from google.genai import _common, _live_converters, live, types

    model, config = build_connect_config(persona, variables)
    client = genai.Client(
        api_key="offline", http_options=types.HttpOptions(api_version=persona.api_version())
    )
    api_client = client._api_client
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # SDK: generation_config deprecated
        transformed_model = live.t.t_model(api_client, model)
        parameter_model = _drive(live._t_live_connect_config(api_client, config))
        request_dict = _common.convert_to_dict(
            _live_converters._LiveConnectParameters_to_mldev(
                api_client=api_client,
                from_object=types.LiveConnectParameters(
                    model=transformed_model, config=parameter_model
                ).model_dump(exclude_none=True),
            )
        )
    del request_dict["config"]
    request_dict = _common.encode_unserializable_types(request_dict)
    live.setv(request_dict, ["setup", "model"], transformed_model)
    # Round-trip through JSON: exactly the text on the wire, parsed back.
    return json.loads(json.dumps(request_dict))
