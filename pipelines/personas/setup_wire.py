"""The Live API ``setup`` message (Gemini Developer API) rendered from a ``LiveConnectConfig``.

What ``AsyncLive.connect`` puts on the wire, built with public ``model_dump`` calls and the small
mapping the SDK's (private) converter applies: generation fields go under ``generationConfig``,
the system instruction becomes a user ``Content``, tools become ``functionDeclarations``, and the
other fields keep their plain (snake_case) dump under a camelCase key, exactly as the SDK sends
them. ``tests/test_persona_setup.py`` compares the result with the SDK's converter for every
persona, so an SDK change that moves a field fails there.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from google.genai.types import LiveConnectConfig

# LiveConnectConfig fields in the order the SDK writes them, and where each goes in ``setup``.
# Values are the field's plain ``model_dump`` (snake_case inside), as the SDK sends them; the
# fields converted key by key (system instruction, tools, session resumption) are handled below.
_SETUP_PATHS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("generation_config", ("generationConfig",)),
    ("response_modalities", ("generationConfig", "responseModalities")),
    ("temperature", ("generationConfig", "temperature")),
    ("top_p", ("generationConfig", "topP")),
    ("top_k", ("generationConfig", "topK")),
    ("max_output_tokens", ("generationConfig", "maxOutputTokens")),
    ("media_resolution", ("generationConfig", "mediaResolution")),
    ("seed", ("generationConfig", "seed")),
    ("speech_config", ("generationConfig", "speechConfig")),
    ("thinking_config", ("generationConfig", "thinkingConfig")),
    ("enable_affective_dialog", ("generationConfig", "enableAffectiveDialog")),
    ("system_instruction", ("systemInstruction",)),
    ("tools", ("tools",)),
    ("session_resumption", ("sessionResumption",)),
    ("input_audio_transcription", ("inputAudioTranscription",)),
    ("output_audio_transcription", ("outputAudioTranscription",)),
    ("realtime_input_config", ("realtimeInputConfig",)),
    ("context_window_compression", ("contextWindowCompression",)),
    ("proactivity", ("proactivity",)),
    ("history_config", ("historyConfig",)),
)


def _system_instruction(value: Any) -> dict[str, Any]:
    """``systemInstruction``: a plain string becomes one user text part."""
    from google.genai.types import Content, Part

    content = Content(role="user", parts=[Part(text=value)]) if isinstance(value, str) else value
    dumped: dict[str, Any] = content.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dumped


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    """One ``tools`` entry: function declarations only (all a persona can declare)."""
    extra = sorted(set(tool) - {"function_declarations"})
    if extra:
        raise ValueError(
            f"setup rendering: got tool fields {extra}, expected only function_declarations; "
            "map them in pipelines/personas/setup_wire.py (_tool) as the SDK's _Tool_to_mldev does"
        )
    return {"functionDeclarations": tool["function_declarations"]} if tool else {}


def render_setup(model: str, config: LiveConnectConfig) -> dict[str, Any]:
    """The ``{"setup": {...}}`` JSON the SDK sends to the Gemini API for ``model`` + ``config``.

    Args:
        model: ``models/<name>``.
        config: The session config (``connect_config``).

    Raises:
        ValueError: ``config`` sets a field this rendering has no mapping for.
    """
    fields = config.model_dump(mode="json", exclude_none=True)
    unknown = sorted(set(fields) - {name for name, _ in _SETUP_PATHS})
    if unknown:
        raise ValueError(
            f"setup rendering: got LiveConnectConfig fields {unknown}, expected only "
            f"{[name for name, _ in _SETUP_PATHS]}; add their wire paths to _SETUP_PATHS in "
            "pipelines/personas/setup_wire.py (see the SDK's _LiveConnectConfig_to_mldev)"
        )
    setup: dict[str, Any] = {"model": model}
    for name, path in _SETUP_PATHS:
        if name not in fields:
            continue
        value = fields[name]
        if name == "system_instruction":
            value = _system_instruction(config.system_instruction)
        elif name == "tools":
            value = [_tool(tool) for tool in value]
        elif name == "session_resumption":
            if "transparent" in value:
                raise ValueError(
                    "setup rendering: got session_resumption.transparent, expected it unset: "
                    "the Gemini API (not Vertex) refuses it"
                )
            value = {k: v for k, v in value.items() if k == "handle"}
        node = setup
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    # Round-trip through JSON: exactly the text on the wire, parsed back.
    parsed: dict[str, Any] = json.loads(json.dumps({"setup": setup}))
    return parsed
