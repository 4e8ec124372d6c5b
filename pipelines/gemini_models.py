"""What each Gemini Live model accepts: the one table shared by persona validation and the emulator.

Facts come from ``shared/reference/gemini-live-api.md`` section 6 (models, late 2026). The
emulator rejects setups with exactly these rules, and persona validation refuses the same
setups before a call, so the two can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

API_VERSIONS: tuple[str, ...] = ("v1", "v1beta", "v1alpha")

VOICES: tuple[str, ...] = (
    "Zephyr", "Puck", "Charon", "Kore", "Fenrir", "Leda", "Orus", "Aoede", "Callirrhoe",
    "Autonoe", "Enceladus", "Iapetus", "Umbriel", "Algieba", "Despina", "Erinome", "Algenib",
    "Rasalgethi", "Laomedeia", "Achernar", "Alnilam", "Schedar", "Gacrux", "Pulcherrima",
    "Achird", "Zubenelgenubi", "Vindemiatrix", "Sadachbia", "Sadaltager", "Sulafat",
)  # fmt: skip

THINKING_LEVELS: tuple[str, ...] = ("MINIMAL", "LOW", "MEDIUM", "HIGH")

ThinkingKind = Literal["none", "level", "budget"]
# "no": the field is rejected; "yes": accepted on every API version; "v1alpha": only there;
# "always": the feature is always on and an explicit ``false`` is rejected.
FeatureSupport = Literal["no", "yes", "v1alpha", "always"]


@dataclass(frozen=True)
class ModelSpec:
    """One Live model's capabilities.

    Attributes:
        name: Model id without the ``models/`` prefix.
        native_audio: Native-audio models choose their own language; ``language_code`` is inert.
        thinking: Which thinking knob the model takes: none, ``thinking_level`` or
            ``thinking_budget``.
        thinking_required: A thinking level must be sent.
        thinking_levels: Levels the model accepts (when ``thinking == "level"``).
        affective_dialog: Support for ``enableAffectiveDialog``.
        proactive_audio: Support for ``proactivity.proactive_audio``.
        async_tools: Whether ``NON_BLOCKING`` function declarations are accepted.
        sync_tools: Whether ``BLOCKING`` (or unspecified) function declarations are accepted.
        status: ``stable``, ``preview`` or ``legacy``, for messages.
        voices: Prebuilt voices.
        text_output: Whether ``response_modalities: [TEXT]`` is accepted (no current Live
            model has it: all are audio-out only).
        mid_session_client_content: Whether ``clientContent`` is accepted at any time. When
            false (3.1), it is accepted only as the initial history: with
            ``historyConfig.initial_history_in_client_content`` set, and before the session's
            first ``realtimeInput`` or first model output; after either, or without that
            setting, the session closes 1007 ``Request contains an invalid argument.`` Text
            must then go as ``realtimeInput.text`` (livekit/agents PR #5251, pipecat PR #4171,
            ai.google.dev live-api capabilities: "after the first model turn").
        null_resumption_handle: Whether ``sessionResumption: {handle: null}`` is accepted.
            When false (3.1), an explicit null closes 1007; ``{}`` is fine
            (google/adk-python #5018, strands-agents #1999).
        bundled_messages: 3.x: one server message carries several ``modelTurn`` parts, the
            transcript fragments of that stretch, and (the last one) ``turnComplete`` with
            ``usageMetadata``; the caller's ``inputTranscription`` rides in the reply's first
            messages. 2.5 sends one part per message (``gemini-live-api.md`` section 3).
        usage_only_messages: 3.x also sends messages that carry only ``usageMetadata``
            (livekit/agents PR #5251, #5234).
    """

    name: str
    native_audio: bool = True
    thinking: ThinkingKind = "none"
    thinking_required: bool = False
    thinking_levels: tuple[str, ...] = ()
    affective_dialog: FeatureSupport = "no"
    proactive_audio: FeatureSupport = "no"
    async_tools: bool = True
    sync_tools: bool = True
    status: str = "stable"
    voices: tuple[str, ...] = field(default=VOICES)
    text_output: bool = False
    mid_session_client_content: bool = True
    null_resumption_handle: bool = True
    bundled_messages: bool = True
    usage_only_messages: bool = True


_NATIVE_25 = dict(
    thinking="budget",
    affective_dialog="v1alpha",
    proactive_audio="v1alpha",
    status="preview",
    bundled_messages=False,
    usage_only_messages=False,
)

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("gemini-3.8-live", proactive_audio="always"),
        ModelSpec(
            "gemini-3.8-live-extended-thinking",
            thinking="level",
            thinking_required=True,
            thinking_levels=("LOW", "MEDIUM", "HIGH"),
            proactive_audio="always",
            sync_tools=False,
        ),
        ModelSpec(
            "gemini-3.1-flash-live-preview",
            thinking="level",
            thinking_levels=THINKING_LEVELS,
            async_tools=False,
            status="legacy",
            mid_session_client_content=False,
            null_resumption_handle=False,
        ),
        ModelSpec("gemini-2.5-flash-native-audio-preview-09-2025", **_NATIVE_25),  # type: ignore[arg-type]
        ModelSpec("gemini-2.5-flash-native-audio-preview-12-2025", **_NATIVE_25),  # type: ignore[arg-type]
        ModelSpec("gemini-2.5-flash-native-audio-latest", **_NATIVE_25),  # type: ignore[arg-type]
    )
}

DEFAULT_MODEL = "gemini-3.8-live"
# An audio session without contextWindowCompression ends after this long, across resumed
# connections (ai.google.dev/gemini-api/docs/live-session); the emulator enforces it too.
AUDIO_SESSION_LIMIT_SECS = 15 * 60

# Shut down on the Developer API (2025-12-09): named so messages can say so.
RETIRED_MODELS: frozenset[str] = frozenset(
    {"gemini-live-2.5-flash-preview", "gemini-2.0-flash-live-001"}
)


def bare_model_name(model: str) -> str:
    """``models/gemini-3.8-live`` -> ``gemini-3.8-live``."""
    return model.removeprefix("models/")


def lookup(model: str) -> ModelSpec | None:
    """The spec of a model, by bare or ``models/``-prefixed name; ``None`` if unknown."""
    return MODELS.get(bare_model_name(model))


def model_not_found_reason(model: str, api_version: str) -> str:
    """The close reason the real service gives for an unknown model (before the 123-byte cut)."""
    return (
        f"models/{bare_model_name(model)} is not found for API version {api_version}, or is not "
        "supported for bidiGenerateContent. Call ListModels to see the list of available models "
        "and their supported methods."
    )


def feature_allowed(support: FeatureSupport, api_version: str) -> bool:
    """Whether a feature with this support may be switched on at this API version."""
    if support in ("yes", "always"):
        return True
    if support == "v1alpha":
        return api_version == "v1alpha"
    return False
