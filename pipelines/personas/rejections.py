"""Turn a Live API close (a rejected or dropped session) into a message naming the fix."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipelines.personas.schema import Persona

# Wire field (snake_case or camelCase, as echoed) -> persona field.
_FIELD_FOR_WIRE: dict[str, str] = {
    "enable_affective_dialog": "session.affective_dialog",
    "proactivity": "session.proactive_audio",
    "proactive_audio": "session.proactive_audio",
    "thinking_config": "session.thinking",
    "thinking_level": "session.thinking.level",
    "thinking_budget": "session.thinking.budget",
    "context_window_compression": "session.context_window_compression",
    "trigger_tokens": "session.context_window_compression.trigger_tokens",
    "realtime_input_config": "session.activity_detection",
    "automatic_activity_detection": "session.activity_detection",
    "input_audio_transcription": "session.input_transcription",
    "output_audio_transcription": "session.output_transcription",
    "speech_config": "voice",
    "voice_name": "voice",
    "language_code": "language",
    "temperature": "session.temperature",
    "tools": "tools",
    "function_declarations": "tools",
    "system_instruction": "system_instruction",
    "response_modalities": "response_modality",
}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _fix(persona: Persona, code: int, reason: str) -> str:
    lowered = reason.lower()
    unknown = re.search(r'unknown name "?([A-Za-z_]+)"?', reason, re.IGNORECASE)
    if unknown:
        wire = unknown.group(1)
        field = _FIELD_FOR_WIRE.get(_snake(wire), _snake(wire))
        return (
            f"the service does not know {wire!r} for {persona.model} on API "
            f"{persona.api_version()}: remove or change {field} in the persona, or update "
            "pipelines/gemini_models.py if the model changed"
        )
    if "not found" in lowered and "model" in lowered or "is not supported for bidi" in lowered:
        return (
            f"model {persona.model!r} is not available for the Live API on "
            f"{persona.api_version()}: change model in the persona (see voicebot personas check)"
        )
    if "response modalities" in lowered or "non-audio request" in lowered:
        return "the model refused the response modality: keep response_modality: audio"
    if "thinking" in lowered:
        return (
            "the model refused the thinking setting: set session.thinking to the kind the model "
            "takes (level for 3.x thinking models, budget for 2.5 native audio)"
        )
    if "voice" in lowered:
        return f"the model refused voice {persona.voice!r}: pick another voice in the persona"
    if "quota" in lowered or "resource_exhausted" in lowered or "exceeded" in lowered:
        return (
            "Gemini quota or concurrent-session limit reached: lower VOICEBOT_MAX_CALLS or raise "
            "the quota (not a persona problem)"
        )
    if "session not found" in lowered:
        return "a stale session-resumption handle: the next call starts a fresh session"
    if "deadline expired" in lowered:
        return (
            "the Live connection reached its time limit: enable session.context_window_compression"
        )
    if "aborted" in lowered:
        return "audio was sent while a tool call was pending: check the tool handlers answer"
    if "not implemented" in lowered or "not supported" in lowered:
        return (
            f"{persona.model} does not support something this persona switches on: check "
            "session features with voicebot personas check"
        )
    if code == 1011:
        return "Gemini had an internal or temporary error: retry; not a persona problem"
    if code == 1007:
        return (
            "the service refused the session setup: run voicebot personas show "
            f"{persona.id} and compare it with the model's documented fields"
        )
    if code == 1008:
        return "the service refused the request (policy/model): check model and API key"
    return "see the Live API close code table (docs) for this code"


_KEY_PROBLEMS = ("api key not valid", "api_key_invalid", "unregistered callers", "api key expired")


def _is_key_problem(reason: str) -> bool:
    lowered = reason.lower()
    return any(marker in lowered for marker in _KEY_PROBLEMS)


def explain_rejection(persona: Persona, code: int, reason: str) -> str:
    """One line naming the persona file, the close code and reason, and the likely fix.

    Args:
        persona: The persona the call used.
        code: WebSocket close code (``APIError.code``), e.g. 1007, 1008, 1011.
        reason: Close reason (``APIError.details``), at most 123 bytes.
    """
    shown = " ".join((reason or "").split()) or "(no reason given)"
    if _is_key_problem(reason or ""):
        # Not the persona's fault: name the variable to fix, not the persona file.
        return (
            f"GEMINI_API_KEY: Gemini closed the session with {code} ({shown}); fix: set "
            "GEMINI_API_KEY to a valid Gemini API key (the persona is not the problem)"
        )
    where = str(persona.source) if persona.source else f"persona {persona.id!r}"
    fix = _fix(persona, code, reason or "")
    return f"{where}: Gemini closed the session with {code} ({shown}); fix: {fix}"
