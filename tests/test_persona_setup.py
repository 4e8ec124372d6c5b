"""A persona's ``LiveConnectConfig`` and wire ``setup``, checked against two oracles.

``Persona.connect_config`` builds the config from public google-genai types; it must equal, for
every persona file and a set of variants that reach each model-dependent rule, what Pipecat's
``GeminiLiveLLMService`` assembles (the old path, kept here only: it needs Pipecat privates).
``setup_message`` renders the wire JSON with our own code; it must equal what the SDK's private
converters produce (the path ``AsyncLive.connect`` takes), so an SDK change fails here first.
"""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from pipelines.personas import Persona, call_variables, load_personas, setup_message
from pipelines.personas.setup import enabled_tools
from pipelines.personas.setup_wire import render_setup

pytestmark = pytest.mark.unit

ROOT = Path(__file__).parent.parent
PERSONA_DIRS = (ROOT / "config" / "personas", ROOT / "tests" / "personas")
NOW = datetime(2026, 3, 2, 13, 5)


def _files() -> dict[str, Persona]:
    return {
        f"{d.name}/{pid}": p for d in PERSONA_DIRS for pid, p in load_personas(d).personas.items()
    }


def _session(persona: Persona, **update: Any) -> Persona:
    return persona.model_copy(update={"session": persona.session.model_copy(update=update)})


def _variants(files: dict[str, Persona]) -> dict[str, Persona]:
    """Personas that reach the rules no shipped file does (forced past validation)."""
    from pipelines.personas.sections import ActivityDetection, EndCallTool, Thinking, Tools

    reception = files["personas/receptionist"]
    thinking = files["personas/appointments"]
    legacy = files["personas/legacy31"]
    find, book = thinking.http_tools  # persona HTTP tools, default and NON_BLOCKING on 3.8
    return {
        "transcription off": _session(
            reception, input_transcription=False, output_transcription=False
        ),
        "input transcription only": _session(reception, output_transcription=False),
        "thinking model, no level (default)": _session(thinking, thinking=None),
        "thinking model, budget": _session(thinking, thinking=Thinking(budget=256)),
        "3.8, thinking level": _session(reception, thinking=Thinking(level="high")),
        "3.1 with tools (no behavior)": legacy.model_copy(
            update={"tools": Tools(end_call=EndCallTool(goodbye=None))}
        ),
        "unknown model with tools": reception.model_copy(update={"model": "acme-voice-1"}),
        "3.8, HTTP tools blocking and not": reception.model_copy(
            update={"http_tools": (find, book.model_copy(update={"behavior": "NON_BLOCKING"}))}
        ),
        "2.5 model": reception.model_copy(
            update={"model": "gemini-2.5-flash-native-audio-latest", "language": "de-DE"}
        ),
        "server VAD off": _session(
            reception, activity_detection=ActivityDetection(disabled=True), temperature=0.0
        ),
        "compression without trigger, proactive off": _session(
            reception,
            context_window_compression=reception.session.context_window_compression.model_copy(
                update={"trigger_tokens": None}
            )
            if reception.session.context_window_compression
            else None,
            proactive_audio=False,
            affective_dialog=True,
        ),
    }


ALL = {**_files()}
ALL.update(_variants(ALL))


def _variables(persona: Persona) -> dict[str, str]:
    return call_variables(persona, caller="+15557654321", called="+15551230001",
                          custom={"campaign": "spring"}, now=NOW)  # fmt: skip


# --- oracle 1: Pipecat's GeminiLiveLLMService assembling the config (the old path) ----------


def _drive(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("Pipecat's _connect tried to wait for I/O; expected none")


def _pipecat_settings(persona: Persona, instruction: str) -> Any:
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

    s, ad = persona.session, persona.session.activity_detection
    kwargs: dict[str, Any] = {
        "model": f"models/{persona.model.removeprefix('models/')}",
        "voice": persona.voice,
        "modalities": GeminiModalities.AUDIO,
        "system_instruction": instruction,
        "temperature": s.temperature,
        "enable_affective_dialog": s.affective_dialog,
    }
    if persona.language is not None:
        kwargs["language"] = persona.language
    if s.thinking is not None:
        kwargs["thinking"] = (
            ThinkingConfig(thinking_level=ThinkingLevel(s.thinking.level))
            if s.thinking.level is not None
            else ThinkingConfig(thinking_budget=s.thinking.budget)
        )
    if s.context_window_compression is not None:
        kwargs["context_window_compression"] = ContextWindowCompressionParams(
            enabled=True, trigger_tokens=s.context_window_compression.trigger_tokens
        )
    if s.proactive_audio is not None:
        kwargs["proactivity"] = ProactivityConfig(proactive_audio=s.proactive_audio)
    start, end = ad.start_sensitivity, ad.end_sensitivity
    kwargs["vad"] = GeminiVADParams(
        disabled=ad.disabled,
        start_sensitivity=StartSensitivity(f"START_SENSITIVITY_{start.upper()}") if start else None,
        end_sensitivity=EndSensitivity(f"END_SENSITIVITY_{end.upper()}") if end else None,
        prefix_padding_ms=ad.prefix_padding_ms,
        silence_duration_ms=ad.silence_duration_ms,
    )
    return GeminiLiveLLMService.Settings(**kwargs)


def _pipecat_tools(persona: Persona) -> Any:
    """The enabled built-in tools as Pipecat ``FunctionSchema``s (the texts calls used)."""
    from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
    from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema

    reason = {"reason": {"type": "string", "description": "Why, in a few words."}}
    functions = []
    if persona.tools.end_call is not None:
        goodbye = persona.tools.end_call.goodbye
        description = (
            "End the phone call. Call this only when the conversation is over. The call hangs "
            "up after your goodbye has played." + (f" {goodbye}" if goodbye else "")
        )
        functions.append(
            FunctionSchema(name="end_call", description=description, properties=reason, required=[])
        )
    if persona.tools.transfer_call is not None:
        description = (
            "Transfer the caller to a human colleague when they ask for a person or you cannot "
            "help. Tell the caller you are transferring them first."
        )
        functions.append(
            FunctionSchema(
                name="transfer_call", description=description, properties=reason, required=[]
            )
        )
    for tool in persona.http_tools:  # persona HTTP tools (pipelines/personas/tools.py)
        params = tool.parameters
        functions.append(
            FunctionSchema(
                name=tool.name,
                description=tool.spoken_description(),
                properties=params.get("properties", {}),
                required=params.get("required", []),
            )
        )
    return ToolsSchema(standard_tools=functions) if functions else None


async def _no_handler(params: Any) -> None:
    await params.result_callback(None)


def pipecat_connect_config(persona: Persona, instruction: str) -> tuple[str, Any]:
    from pipecat.services.google.gemini_live.llm import GeminiLiveLLMService

    captured: dict[str, Any] = {}

    class Capture(GeminiLiveLLMService):
        def create_task(self, coroutine: Any, name: str | None = None, context: Any = None) -> Any:
            coroutine.close()

        def _connection_task_handler(self, config: Any) -> Any:  # type: ignore[override]
            captured["config"] = config

            async def noop() -> None:
                return None

            return noop()

        async def push_error(self, error_msg: str, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError(error_msg)

    from pipelines.personas.tools import is_async

    settings = _pipecat_settings(persona, instruction)
    service = Capture(api_key="offline", settings=settings, tools=_pipecat_tools(persona))
    for name in enabled_tools(persona):
        service.register_function(name, _no_handler, cancel_on_interruption=not persona.tools_async)
    for tool in persona.http_tools:
        service.register_function(
            tool.name, _no_handler, cancel_on_interruption=not is_async(tool, persona.tools_async)
        )
    _drive(service._connect())
    config = captured["config"]
    if not persona.session.input_transcription:
        config.input_audio_transcription = None
    if not persona.session.output_transcription:
        config.output_audio_transcription = None
    return str(getattr(service._settings, "model")), config  # noqa: B009 (untyped Settings)


# --- oracle 2: the SDK's own converter (what AsyncLive.connect sends) ------------------------


@functools.cache
def _offline_client(api_version: str) -> Any:
    """One SDK client per API version for the whole module (each new one loads CA bundles)."""
    from google import genai
    from google.genai import types

    return genai.Client(api_key="offline", http_options=types.HttpOptions(api_version=api_version))


def sdk_setup(model: str, config: Any, api_version: str) -> dict[str, Any]:
    from google.genai import _common, _live_converters, live, types

    api_client = _offline_client(api_version)._api_client
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # SDK: generation_config deprecated
        transformed_model = live.t.t_model(api_client, model)
        parameter_model = _drive(live._t_live_connect_config(api_client, config.model_copy()))
        request = _common.convert_to_dict(
            _live_converters._LiveConnectParameters_to_mldev(
                api_client=api_client,
                from_object=types.LiveConnectParameters(
                    model=transformed_model, config=parameter_model
                ).model_dump(exclude_none=True),
            )
        )
    del request["config"]
    request = _common.encode_unserializable_types(request)
    live.setv(request, ["setup", "model"], transformed_model)
    parsed: dict[str, Any] = json.loads(json.dumps(request))
    return parsed


# --- the tests -----------------------------------------------------------------------------


def _diff(ours: dict[str, Any], theirs: dict[str, Any]) -> str:
    return (
        f"ours:   {json.dumps(ours, sort_keys=True)}\ntheirs: {json.dumps(theirs, sort_keys=True)}"
    )


@pytest.mark.parametrize("name", sorted(ALL))
def test_connect_config_equals_what_pipecat_built(name: str) -> None:
    persona = ALL[name]
    instruction = persona.render_system_instruction(_variables(persona))
    model, config = persona.connect_config(instruction)
    old_model, old_config = pipecat_connect_config(persona, instruction)
    assert model == old_model
    # Pipecat assigns its tools as plain dicts after construction (no validation); the SDK
    # validates them into ``types.Tool`` when it connects, so compare after the same step.
    # Pipecat also sets a default thinking_level as a plain str (pydantic warns on its dump).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Pydantic serializer warnings", UserWarning)
        validated = type(old_config).model_validate(old_config.model_dump(exclude_none=True))
    ours, theirs = config.model_dump(exclude_none=True), validated.model_dump(exclude_none=True)
    assert ours == theirs, f"{name}: connect_config differs from Pipecat's\n{_diff(ours, theirs)}"
    # And on the wire, through the SDK's converter, both give the same setup.
    api_version = persona.api_version()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Pydantic serializer warnings", UserWarning)
        old_wire = sdk_setup(old_model, old_config, api_version)
    assert sdk_setup(model, config, api_version) == old_wire


@pytest.mark.parametrize("name", sorted(ALL))
def test_setup_message_equals_the_sdk_converter(name: str) -> None:
    persona = ALL[name]
    variables = _variables(persona)
    model, config = persona.connect_config(persona.render_system_instruction(variables))
    ours = setup_message(persona, variables)
    theirs = sdk_setup(model, config, persona.api_version())
    assert ours == theirs, f"{name}: setup differs from the SDK's\n{_diff(ours, theirs)}"
    # Key order too: `voicebot personas show` prints the setup as the SDK sends it.
    assert list(ours["setup"]) == list(theirs["setup"])


def test_session_resumption_handle_reaches_the_wire() -> None:
    """The service adds the handle per connection; the rendering carries it as the SDK does."""
    from google.genai.types import SessionResumptionConfig

    persona = ALL["personas/receptionist"]
    model, config = persona.connect_config("Hi.")
    assert config.session_resumption == SessionResumptionConfig()
    resumed = config.model_copy(
        update={"session_resumption": SessionResumptionConfig(handle="h-1")}
    )
    ours = render_setup(model, resumed)
    assert ours["setup"]["sessionResumption"] == {"handle": "h-1"}
    assert ours == sdk_setup(model, resumed, persona.api_version())


def test_unmapped_config_field_is_refused_with_the_fix() -> None:
    persona = ALL["personas/receptionist"]
    model, config = persona.connect_config("Hi.")
    with pytest.raises(ValueError) as info:
        render_setup(model, config.model_copy(update={"labels": {"team": "a"}}))
    message = str(info.value)
    assert "got LiveConnectConfig fields ['labels']" in message
    assert "_SETUP_PATHS in pipelines/personas/setup_wire.py" in message


def test_every_shipped_persona_is_compared() -> None:
    names = {name.split("/")[1] for name in ALL if "/" in name}
    assert {"receptionist", "soporte_es", "appointments", "legacy31", "transfer"} <= names
    assert len(ALL) >= len(_files()) + 10
