"""The known fields of a ``setup`` message, and validation of a setup as the service does it.

Field names are accepted in snake_case and camelCase at every level (proto-JSON). A name the
schema does not know is rejected with the service's 1007 text, echoing the key as sent and
naming the containing path in snake_case (``'setup.generation_config'``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from pipelines import gemini_models as gm

# A schema node: None = any value (not inspected), dict = object with these fields,
# list of one dict = repeated object.
Node = dict[str, Any] | list[Any] | None

_BLOB: dict[str, Node] = {"data": None, "mime_type": None, "display_name": None}
_PART: dict[str, Node] = {
    "text": None,
    "inline_data": _BLOB,
    "file_data": {"file_uri": None, "mime_type": None, "display_name": None},
    "function_call": {"id": None, "name": None, "args": None, "partial_args": None,
                      "will_continue": None},
    "function_response": {"id": None, "name": None, "response": None, "parts": None,
                          "scheduling": None, "will_continue": None},
    "thought": None, "thought_signature": None, "executable_code": None,
    "code_execution_result": None, "video_metadata": None, "media_resolution": None,
    "part_metadata": None,
}  # fmt: skip
CONTENT: dict[str, Node] = {"role": None, "parts": [_PART]}
_SPEECH: dict[str, Node] = {
    "voice_config": {"prebuilt_voice_config": {"voice_name": None},
                     "replicated_voice_config": None, "voice": None},
    "language_code": None,
    "multi_speaker_voice_config": None,
}  # fmt: skip
_GENERATION: dict[str, Node] = {
    "candidate_count": None, "max_output_tokens": None, "temperature": None, "top_p": None,
    "top_k": None, "presence_penalty": None, "frequency_penalty": None, "seed": None,
    "response_modalities": None, "media_resolution": None, "speech_config": _SPEECH,
    "thinking_config": {"include_thoughts": None, "thinking_budget": None,
                        "thinking_level": None},
    "enable_affective_dialog": None, "stop_sequences": None, "response_mime_type": None,
    "response_schema": None, "response_json_schema": None, "response_logprobs": None,
    "logprobs": None, "audio_timestamp": None, "routing_config": None,
    "model_selection_config": None, "translation_config": None,
    "audio_transcription_config": None, "enable_enhanced_civic_answers": None,
}  # fmt: skip
_TRANSCRIPTION: dict[str, Node] = {
    k: None
    for k in ("language_codes", "language_auto", "language_hints", "custom_vocabulary",
              "adaptation_phrases", "word_timestamp", "diarization", "mode")
}  # fmt: skip
_TOOL: dict[str, Node] = {
    "function_declarations": [{"name": None, "description": None, "parameters": None,
                               "parameters_json_schema": None, "response": None,
                               "response_json_schema": None, "behavior": None}],
    "google_search": None, "google_search_retrieval": None, "code_execution": None,
    "url_context": None, "retrieval": None, "computer_use": None, "file_search": None,
    "google_maps": None, "enterprise_web_search": None, "mcp_servers": None,
}  # fmt: skip
SETUP: dict[str, Node] = {
    "model": None,
    "generation_config": _GENERATION,
    "system_instruction": CONTENT,
    "tools": [_TOOL],
    "session_resumption": {"handle": None, "transparent": None},
    "context_window_compression": {"trigger_tokens": None,
                                   "sliding_window": {"target_tokens": None}},
    "input_audio_transcription": _TRANSCRIPTION,
    "output_audio_transcription": _TRANSCRIPTION,
    "realtime_input_config": {
        "automatic_activity_detection": {"disabled": None, "start_of_speech_sensitivity": None,
                                         "end_of_speech_sensitivity": None,
                                         "prefix_padding_ms": None, "silence_duration_ms": None},
        "activity_handling": None, "turn_coverage": None,
        "interim_transcript_timestamp_enabled": None,
    },
    "proactivity": {"proactive_audio": None},
    "explicit_vad_signal": None,
    "history_config": {"initial_history_in_client_content": None},
    "avatar_config": None,
    "safety_settings": [{"category": None, "method": None, "threshold": None}],
    "labels": None,
}  # fmt: skip

INVALID_ARGUMENT = "Request contains an invalid argument."
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


@lru_cache(maxsize=1024)
def snake(key: str) -> str:
    """``responseModalities`` -> ``response_modalities`` (snake_case passes through)."""
    return _CAMEL.sub("_", key).lower()


class Rejection(Exception):
    """A request the service refuses: close the socket with ``code`` and ``reason``.

    Attributes:
        code: WebSocket close code.
        reason: Close reason as the service words it (cut to 123 bytes when sent).
        detail: What exactly was wrong, for the emulator's log.
    """

    def __init__(self, code: int, reason: str, detail: str = "") -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason
        self.detail = detail or reason


def unknown_name(key: str, path: str) -> Rejection:
    """The service's 1007 for a field it does not know (key echoed as sent)."""
    where = f" at '{path}'" if path else ""
    return Rejection(
        1007, f'Invalid JSON payload received. Unknown name "{key}"{where}: Cannot find field.'
    )


def normalize(value: Any, node: Node, path: str) -> Any:
    """A copy of ``value`` with snake_case keys wherever ``node`` describes an object.

    Raises:
        Rejection: A key unknown at its level (1007).
    """
    if node is None:
        return value
    if isinstance(node, list):
        if not isinstance(value, list):
            return value
        return [normalize(item, node[0], f"{path}[{i}]") for i, item in enumerate(value)]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = snake(key)
        if name not in node:
            raise unknown_name(key, path)
        out[name] = normalize(item, node[name], f"{path}.{name}" if path else name)
    return out


def original_key(raw: dict[str, Any], name: str) -> str:
    """The key as the client spelled it, for echoing in errors."""
    return next((k for k in raw if snake(k) == name), name)


@dataclass
class VadParams:
    """Server-side voice activity detection, from ``automatic_activity_detection``."""

    disabled: bool = False
    start_sensitivity: str = "START_SENSITIVITY_HIGH"
    end_sensitivity: str = "END_SENSITIVITY_HIGH"
    prefix_padding_ms: int = 20
    silence_duration_ms: int = 500


@dataclass
class SetupInfo:
    """What a validated setup asked for."""

    model: gm.ModelSpec
    api_version: str
    raw: dict[str, Any]
    vad: VadParams = field(default_factory=VadParams)
    barge_in: bool = True
    input_transcription: bool = False
    output_transcription: bool = False
    resumption: bool = False
    resume_handle: str = ""
    tool_names: frozenset[str] = frozenset()
    system_tokens: int = 0
    history_in_client_content: bool = False


def _text_tokens(content: Any) -> int:
    parts = content.get("parts") if isinstance(content, dict) else None
    chars = sum(len(str(p.get("text", ""))) for p in parts or [] if isinstance(p, dict))
    return chars // 4


def validate_setup(raw: Any, api_version: str) -> SetupInfo:
    """Check a ``setup`` payload the way the service does and say what it asked for.

    Raises:
        Rejection: With the service's close code and reason.
    """
    if not isinstance(raw, dict):
        raise Rejection(1007, INVALID_ARGUMENT, "setup is not an object")
    setup = normalize(raw, SETUP, "setup")
    model_name = str(setup.get("model") or "")
    spec = gm.lookup(model_name)
    if spec is None:
        raise Rejection(1008, gm.model_not_found_reason(model_name, api_version))
    gen = setup.get("generation_config") or {}
    raw_gen = raw.get(original_key(raw, "generation_config")) or {}
    _check_modalities(gen, spec)
    _check_features(setup, raw, gen, raw_gen, spec, api_version)
    _check_tools(setup.get("tools") or [], spec)
    info = SetupInfo(model=spec, api_version=api_version, raw=raw)
    ric = setup.get("realtime_input_config") or {}
    aad = ric.get("automatic_activity_detection") or {}
    vad = info.vad
    vad.disabled = bool(aad.get("disabled", False))
    vad.start_sensitivity = str(aad.get("start_of_speech_sensitivity") or vad.start_sensitivity)
    vad.end_sensitivity = str(aad.get("end_of_speech_sensitivity") or vad.end_sensitivity)
    vad.prefix_padding_ms = int(aad.get("prefix_padding_ms") or vad.prefix_padding_ms)
    vad.silence_duration_ms = int(aad.get("silence_duration_ms") or vad.silence_duration_ms)
    info.barge_in = ric.get("activity_handling") != "NO_INTERRUPTION"
    info.input_transcription = "input_audio_transcription" in setup
    info.output_transcription = "output_audio_transcription" in setup
    resumption = setup.get("session_resumption")
    _check_resumption(resumption, spec)
    info.resumption = resumption is not None
    info.resume_handle = str((resumption or {}).get("handle") or "")
    info.tool_names = frozenset(
        str(fd.get("name"))
        for tool in setup.get("tools") or []
        for fd in tool.get("function_declarations") or []
    )
    info.system_tokens = _text_tokens(setup.get("system_instruction"))
    history = setup.get("history_config") or {}
    info.history_in_client_content = bool(history.get("initial_history_in_client_content"))
    return info


def _check_resumption(resumption: Any, spec: gm.ModelSpec) -> None:
    """3.1 refuses ``sessionResumption: {handle: null}`` (``{}`` is fine)."""
    explicit_null = isinstance(resumption, dict) and "handle" in resumption
    if explicit_null and resumption["handle"] is None and not spec.null_resumption_handle:
        raise Rejection(
            1007, INVALID_ARGUMENT, f"{spec.name}: sessionResumption.handle is null (omit it)"
        )


def _check_modalities(gen: dict[str, Any], spec: gm.ModelSpec) -> None:
    modalities = [str(m).upper() for m in gen.get("response_modalities") or ["AUDIO"]]
    combo = ", ".join(modalities)
    unsupported = f"The requested combination of response modalities ({combo}) is not supported "
    if len(set(modalities)) > 1 or not set(modalities) <= {"AUDIO", "TEXT"}:
        raise Rejection(1007, unsupported + "by the model.")
    if modalities == ["TEXT"]:
        if not spec.text_output:
            raise Rejection(1007, unsupported + "by the model.")
        if (gen.get("speech_config") or {}).get("voice_config"):
            raise Rejection(1007, "Cannot extract voices from a non-audio request.")


def _check_features(
    setup: dict[str, Any],
    raw: dict[str, Any],
    gen: dict[str, Any],
    raw_gen: dict[str, Any],
    spec: gm.ModelSpec,
    version: str,
) -> None:
    if "enable_affective_dialog" in gen and not gm.feature_allowed(spec.affective_dialog, version):
        key = original_key(raw_gen, "enable_affective_dialog")
        raise unknown_name(key, "setup.generation_config")
    proactivity = setup.get("proactivity")
    if proactivity is not None:
        if not gm.feature_allowed(spec.proactive_audio, version):
            raise unknown_name(original_key(raw, "proactivity"), "setup")
        if spec.proactive_audio == "always" and proactivity.get("proactive_audio") is False:
            raise Rejection(
                1007, INVALID_ARGUMENT, f"{spec.name}: proactive audio is always on; omit it"
            )
    voice = (
        ((gen.get("speech_config") or {}).get("voice_config") or {}).get("prebuilt_voice_config")
        or {}
    ).get("voice_name")
    if voice is not None and voice not in spec.voices:
        raise Rejection(1007, INVALID_ARGUMENT, f"unknown voice {voice!r}")
    thinking = gen.get("thinking_config")
    if thinking is None:
        if spec.thinking_required:
            raise Rejection(1007, "Thinking level must be specified for this model.")
        return
    level, budget = thinking.get("thinking_level"), thinking.get("thinking_budget")
    wrong = (
        spec.thinking == "none"
        or (spec.thinking == "level" and budget is not None)
        or (spec.thinking == "budget" and level is not None)
    )
    if wrong:
        raise Rejection(1007, INVALID_ARGUMENT, f"{spec.name} takes thinking={spec.thinking}")
    if spec.thinking == "level":
        if level is None and spec.thinking_required:
            raise Rejection(1007, "Thinking level must be specified for this model.")
        if level is not None and str(level).upper() not in spec.thinking_levels:
            raise Rejection(1007, INVALID_ARGUMENT, f"{spec.name}: thinking level {level}")


def _check_tools(tools: list[Any], spec: gm.ModelSpec) -> None:
    for tool in tools:
        for fd in tool.get("function_declarations") or []:
            behavior = str(fd.get("behavior") or "BLOCKING")
            if behavior == "NON_BLOCKING" and not spec.async_tools:
                raise Rejection(1007, INVALID_ARGUMENT, f"{spec.name}: no async function calls")
            if behavior != "NON_BLOCKING" and not spec.sync_tools:
                raise Rejection(1007, INVALID_ARGUMENT, f"{spec.name}: no blocking function calls")
