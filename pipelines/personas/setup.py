"""A persona mapped onto the Live API: its ``LiveConnectConfig`` and the wire ``setup`` message.

``connect_config`` builds the complete ``LiveConnectConfig`` a call connects with from public
google-genai types only (no Pipecat service, no SDK internals); it reproduces field for field
what Pipecat's ``GeminiLiveLLMService`` assembled before we owned the Live service, including
its model-dependent rules (tool ``behavior``, the default thinking level of thinking models).
``setup_message`` renders the ``{"setup": …}`` JSON the SDK sends for that config (``setup_wire``)
for ``voicebot personas show``; ``tests/test_persona_setup.py`` checks both against the old
Pipecat path and the SDK's own converter, so an upstream change shows up there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from google.genai.types import FunctionDeclaration, LiveConnectConfig, ThinkingConfig

    from pipelines.personas.schema import Persona

from pipelines.personas import tools as http_tools
from pipelines.personas.setup_wire import render_setup
from pipelines.personas.variables import call_variables

END_CALL = "end_call"
TRANSFER_CALL = "transfer_call"

# What Pipecat's service sent for fields a persona does not set (kept so the wire is unchanged).
MAX_OUTPUT_TOKENS = 4096
DEFAULT_LANGUAGE = "en-US"
# Live thinking models reject a setup without a level; the lowest they accept keeps latency down.
DEFAULT_THINKING_LEVEL = "LOW"

_REASON = {"reason": {"type": "string", "description": "Why, in a few words."}}


def model_name(persona: Persona) -> str:
    """The persona's model as the Live API names it: ``models/<name>``."""
    return f"models/{persona.model.removeprefix('models/')}"


def _gemini_version(model: str) -> tuple[int, int] | None:
    """Major/minor version in a model id (``gemini-3.8-live`` -> (3, 8)); ``None`` if absent."""
    match = re.search(r"gemini(?:-[a-z]+)*-(\d+)(?:\.(\d+))?", model)
    if not match:
        return None
    return int(match.group(1)), int(match.group(2) or 0)


def _is_thinking_model(model: str) -> bool:
    """3.8+ thinking models: they need a thinking level and accept only NON_BLOCKING tools."""
    version = _gemini_version(model)
    return "thinking" in model and version is not None and version >= (3, 8)


def _tool_behavior(model: str, tools_async: bool) -> str | None:
    """The ``behavior`` to declare on each function for ``model`` (``None``: leave it unset).

    NON_BLOCKING is not accepted before 3.8 on 3.x; from 3.8 on it is the default, so sync
    tools say BLOCKING explicitly, except on thinking models, which accept only NON_BLOCKING.
    """
    version = _gemini_version(model)
    if version is not None and (3, 0) <= version < (3, 8):
        return None
    if tools_async:
        return "NON_BLOCKING"
    if version is not None and version >= (3, 8) and not _is_thinking_model(model):
        return "BLOCKING"
    return None


def _tool_texts(persona: Persona) -> list[tuple[str, str]]:
    """``(name, description)`` of each enabled built-in tool, in declaration order."""
    texts = []
    end_call = persona.tools.end_call
    if end_call is not None:
        hint = f" {end_call.goodbye}" if end_call.goodbye else ""
        texts.append(
            (
                END_CALL,
                "End the phone call. Call this only when the conversation is over. The call "
                f"hangs up after your goodbye has played.{hint}",
            )
        )
    if persona.tools.transfer_call is not None:
        texts.append(
            (
                TRANSFER_CALL,
                "Transfer the caller to a human colleague when they ask for a person or you "
                "cannot help. Tell the caller you are transferring them first.",
            )
        )
    return texts


def function_declarations(persona: Persona) -> list[FunctionDeclaration]:
    """The enabled built-in tools as Live API function declarations (behavior per model)."""
    from google.genai.types import Behavior, FunctionDeclaration, Schema

    behavior = _tool_behavior(model_name(persona), persona.tools_async)
    return [
        FunctionDeclaration(
            name=name,
            description=description,
            parameters=Schema.model_validate(
                {"type": "object", "properties": _REASON, "required": []}
            ),
            behavior=Behavior(behavior) if behavior else None,
        )
        for name, description in _tool_texts(persona)
    ] + http_function_declarations(persona)


def http_function_declarations(persona: Persona) -> list[FunctionDeclaration]:
    """The persona's HTTP tools as function declarations (``pipelines.personas.tools``)."""
    model = model_name(persona)
    return http_tools.declarations(
        persona.http_tools,
        lambda tool: _tool_behavior(model, http_tools.is_async(tool, persona.tools_async)),
    )


def _thinking_config(persona: Persona) -> ThinkingConfig | None:
    from google.genai.types import ThinkingConfig, ThinkingLevel

    thinking = persona.session.thinking
    config = None
    if thinking is not None:
        if thinking.level is not None:
            config = ThinkingConfig(thinking_level=ThinkingLevel(thinking.level))
        else:
            config = ThinkingConfig(thinking_budget=thinking.budget)
    if _is_thinking_model(model_name(persona)) and not (config and config.thinking_level):
        config = (config or ThinkingConfig()).model_copy(
            update={"thinking_level": ThinkingLevel(DEFAULT_THINKING_LEVEL)}
        )
    return config


def connect_config(persona: Persona, system_instruction: str) -> tuple[str, LiveConnectConfig]:
    """The model (``models/<name>``) and complete ``LiveConnectConfig`` a call connects with.

    Session resumption is on with no handle; the service adds the handle per connection.

    Args:
        persona: The persona.
        system_instruction: The rendered system instruction (``render_system_instruction``).
    """
    from google.genai import types

    s = persona.session
    ad = s.activity_detection
    detection = types.AutomaticActivityDetection(
        disabled=ad.disabled,
        start_of_speech_sensitivity=(
            types.StartSensitivity(f"START_SENSITIVITY_{ad.start_sensitivity.upper()}")
            if ad.start_sensitivity
            else None
        ),
        end_of_speech_sensitivity=(
            types.EndSensitivity(f"END_SENSITIVITY_{ad.end_sensitivity.upper()}")
            if ad.end_sensitivity
            else None
        ),
        prefix_padding_ms=ad.prefix_padding_ms,
        silence_duration_ms=ad.silence_duration_ms,
    )
    compression = s.context_window_compression
    declarations = function_declarations(persona)
    config = types.LiveConnectConfig(
        generation_config=types.GenerationConfig(
            max_output_tokens=MAX_OUTPUT_TOKENS,
            temperature=s.temperature,
            response_modalities=[types.Modality.AUDIO],
            speech_config=types.SpeechConfig(
                voice_config=types.VoiceConfig(
                    prebuilt_voice_config=types.PrebuiltVoiceConfig(voice_name=persona.voice)
                ),
                language_code=persona.language or DEFAULT_LANGUAGE,
            ),
            media_resolution=types.MediaResolution.MEDIA_RESOLUTION_UNSPECIFIED,
        ),
        system_instruction=system_instruction or None,
        tools=[types.Tool(function_declarations=declarations)] if declarations else None,
        input_audio_transcription=(
            types.AudioTranscriptionConfig() if s.input_transcription else None
        ),
        output_audio_transcription=(
            types.AudioTranscriptionConfig() if s.output_transcription else None
        ),
        session_resumption=types.SessionResumptionConfig(),
        realtime_input_config=types.RealtimeInputConfig(automatic_activity_detection=detection),
        context_window_compression=(
            types.ContextWindowCompressionConfig(
                sliding_window=types.SlidingWindow(), trigger_tokens=compression.trigger_tokens
            )
            if compression is not None
            else None
        ),
        thinking_config=_thinking_config(persona),
        enable_affective_dialog=True if s.affective_dialog else None,
        proactivity=(
            types.ProactivityConfig(proactive_audio=s.proactive_audio)
            if s.proactive_audio is not None
            else None
        ),
        history_config=types.HistoryConfig(initial_history_in_client_content=True),
    )
    return model_name(persona), config


def enabled_tools(persona: Persona) -> list[str]:
    """Names of the enabled built-in tools.

    Register each handler with ``cancel_on_interruption=not persona.tools_async``.
    """
    return [name for name, _ in _tool_texts(persona)]


def sample_variables(persona: Persona) -> dict[str, str]:
    """Template values for an offline rendering (fixed numbers, 2026-01-01 12:00)."""
    return call_variables(
        persona, caller="+15550000001", called=(persona.numbers or ("+15550000002",))[0],
        custom={}, now=datetime(2026, 1, 1, 12, 0),
    )  # fmt: skip


def build_connect_config(
    persona: Persona, variables: Mapping[str, str] | None = None
) -> tuple[str, LiveConnectConfig]:
    """``connect_config`` with the system instruction rendered (sample values when omitted)."""
    if variables is None:
        variables = sample_variables(persona)
    return connect_config(persona, persona.render_system_instruction(variables))


def setup_message(persona: Persona, variables: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The exact ``{"setup": {...}}`` JSON the SDK sends for this persona.

    Args:
        persona: The persona.
        variables: Template values (``call_variables``); sample values when omitted.
    """
    return render_setup(*build_connect_config(persona, variables))
