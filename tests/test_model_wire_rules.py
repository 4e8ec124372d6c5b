"""Per-model wire rules: the shared table, the emulator's message shapes and setup checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipelines import gemini_models as gm
from pipelines.personas import setup_message
from pipelines.personas.loader import check_directory
from sim.emulator import protocol as p
from sim.emulator import voices, wire
from sim.emulator.config import ASSETS_DIR
from sim.emulator.schema import INVALID_ARGUMENT, Rejection, validate_setup

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
GREETING = voices.wav_reply(ASSETS_DIR / "bot_greeting.wav", 80)


def test_the_table_says_which_model_follows_which_rule() -> None:
    legacy = gm.MODELS["gemini-3.1-flash-live-preview"]
    assert not legacy.mid_session_client_content and not legacy.null_resumption_handle
    for name, spec in gm.MODELS.items():
        three = name.startswith("gemini-3")
        assert spec.bundled_messages == three and spec.usage_only_messages == three, name
        if name != legacy.name:
            assert spec.mid_session_client_content and spec.null_resumption_handle, name


def test_fragments_are_a_few_words_that_join_to_the_text() -> None:
    parts = wire.fragments("[caller audio 1.84 s]")
    assert parts == ["[caller audio", " 1.84 s]"]
    assert "".join(wire.fragments("one two three four five")) == "one two three four five"
    assert all(len(f.split()) <= wire.FRAGMENT_WORDS for f in parts)


def _steps(model: str, **kwargs: Any) -> list[wire.Step]:
    calls: list[str] = []
    steps = list(
        wire.reply_steps(
            GREETING,
            gm.MODELS[model],
            output_transcription=True,
            input_text=kwargs.pop("input_text", None),
            after_tool=kwargs.pop("after_tool", False),
            prompt_usage=lambda: calls.append("prompt") or {"promptTokenCount": 1},
            final_usage=lambda: calls.append("final") or {"responseTokenCount": 2},
        )
    )
    assert calls.count("final") == (1 if gm.MODELS[model].bundled_messages else 0)
    return steps


def _parts(message: dict[str, Any]) -> list[Any]:
    return message.get("serverContent", {}).get("modelTurn", {}).get("parts", [])


def test_3x_bundles_parts_transcripts_and_the_turn_end() -> None:
    steps = _steps("gemini-3.8-live", input_text="[caller audio 1.84 s]")
    messages = [json.loads(s.message) for s in steps]
    # A usage-only message first, then several 80 ms parts per message.
    assert messages[0] == {"usageMetadata": {"promptTokenCount": 1}}
    audio = [m for m in messages if _parts(m)]
    assert max(len(_parts(m)) for m in audio) == wire.BUNDLE_PARTS
    assert sum(len(_parts(m)) for m in audio) == len(GREETING.messages)
    # The caller's transcript rides in the reply's first audio messages, not before them.
    heard = [m["serverContent"]["inputTranscription"]["text"] for m in audio[:2]]
    assert "".join(heard) == "[caller audio 1.84 s]"
    said = [m["serverContent"].get("outputTranscription", {}).get("text", "") for m in audio]
    assert "".join(said) == GREETING.label and said[-1]  # alongside or after the audio
    last = messages[-1]
    assert steps[-1].final and _parts(last)
    assert last["serverContent"]["turnComplete"] and last["serverContent"]["generationComplete"]
    assert last["usageMetadata"] == {"responseTokenCount": 2}
    assert steps[-1].secs == pytest.approx(GREETING.secs)
    usage_only = [m for m in messages if set(m) == {"usageMetadata"}]
    assert len(usage_only) >= 2  # one before the audio, one in the middle of a long reply


def test_25_sends_one_part_per_message_and_transcript_fragments_after_their_audio() -> None:
    steps = _steps("gemini-2.5-flash-native-audio-latest", after_tool=True)
    messages = [json.loads(s.message) for s in steps]
    assert messages[0] == {"serverContent": {"outputTranscription": {"text": ""}}}
    audio = [i for i, m in enumerate(messages) if _parts(m)]
    assert all(len(_parts(messages[i])) == 1 for i in audio)
    texts = [
        (i, m["serverContent"]["outputTranscription"]["text"])
        for i, m in enumerate(messages[1:], 1)
        if "outputTranscription" in m.get("serverContent", {})
    ]
    assert "".join(t for _, t in texts) == GREETING.label
    assert texts[0][0] > audio[0] and texts[-1][0] > audio[-1]  # after the audio described
    assert not any(s.final for s in steps)
    assert not any("turnComplete" in m.get("serverContent", {}) for m in messages)
    assert not any("usageMetadata" in m for m in messages)


@pytest.mark.parametrize(
    ("model", "history", "realtime", "spoke", "refused"),
    [
        ("gemini-3.1-flash-live-preview", True, False, False, False),  # the initial history
        ("gemini-3.1-flash-live-preview", True, True, False, True),  # after realtime input
        ("gemini-3.1-flash-live-preview", True, False, True, True),  # after model output
        ("gemini-3.1-flash-live-preview", False, False, False, True),  # no historyConfig
        ("gemini-3.8-live", False, True, True, False),
        ("gemini-2.5-flash-native-audio-latest", False, True, True, False),
    ],
)
def test_client_content_rule(
    model: str, history: bool, realtime: bool, spoke: bool, refused: bool
) -> None:
    rejection = wire.client_content_refusal(
        gm.MODELS[model],
        history_in_client_content=history,
        realtime_seen=realtime,
        model_spoke=spoke,
    )
    assert (rejection is not None) == refused
    if rejection is not None:
        assert (rejection.code, rejection.reason) == (1007, INVALID_ARGUMENT)
        assert "realtimeInput.text" in rejection.detail


@pytest.mark.parametrize(
    ("model", "resumption", "ok"),
    [
        ("gemini-3.1-flash-live-preview", {"handle": None}, False),
        ("gemini-3.1-flash-live-preview", {}, True),
        ("gemini-3.1-flash-live-preview", {"handle": "abc"}, True),
        ("gemini-3.8-live", {"handle": None}, True),
    ],
)
def test_null_resumption_handle(model: str, resumption: dict[str, Any], ok: bool) -> None:
    setup = {"model": f"models/{model}", "sessionResumption": resumption}
    if ok:
        assert validate_setup(setup, "v1beta").resumption
        return
    with pytest.raises(Rejection) as info:
        validate_setup(setup, "v1beta")
    assert (info.value.code, info.value.reason) == (1007, INVALID_ARGUMENT)


@pytest.mark.parametrize("folder", [ROOT / "config" / "personas", ROOT / "tests" / "personas"])
def test_every_persona_setup_passes_the_emulators_rules(folder: Path) -> None:
    """Persona validation, the server's setup and the emulator agree, wire rules included."""
    results, errors = check_directory(folder)
    assert results and not errors
    for result in results:
        persona = result.persona
        assert persona is not None, result.errors
        setup = setup_message(persona)["setup"]
        info = validate_setup(setup, persona.api_version())
        assert info.history_in_client_content  # Pipecat seeds the greeting as initial history
        assert (setup.get("sessionResumption") or {}).get("handle", "") is not None


def test_protocol_splices_parts_without_reencoding() -> None:
    chunk = GREETING.messages[0]
    part = p.chunk_part(chunk)
    message = json.loads(p.server_content([part, part], {"generationComplete": True}))
    assert message["serverContent"]["modelTurn"]["parts"] == 2 * _parts(json.loads(chunk))
    with pytest.raises(ValueError, match="audio_chunk"):
        p.chunk_part(b'{"serverContent":{}}')


def test_audio_that_does_not_end_the_turn_is_bundled_without_turn_complete() -> None:
    steps = list(
        wire.reply_steps(
            GREETING,
            gm.MODELS["gemini-3.8-live"],
            output_transcription=True,
            input_text=None,
            after_tool=False,
            prompt_usage=dict,
            final_usage=lambda: pytest.fail("an announcement owes no usage"),
            end_turn=False,
        )
    )
    messages = [json.loads(s.message) for s in steps]
    assert not any(s.final for s in steps)
    assert sum(len(_parts(m)) for m in messages) == len(GREETING.messages)
    assert not any("turnComplete" in m.get("serverContent", {}) for m in messages)
