"""Persona validation: every rule, with its exact ``file:line: field: got …, expected …`` text."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.personas import PersonaConfigError, load_personas
from pipelines.personas.schema import persona_fields
from pipelines.personas.yaml_source import load_yaml

pytestmark = pytest.mark.unit

BASE = """\
model: gemini-3.8-live
voice: Charon
default: true
numbers: ["+15550001111"]
system_instruction: Be brief.
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def errors_for(tmp_path: Path, text: str, name: str = "bot.yaml") -> list[str]:
    write(tmp_path, name, text)
    with pytest.raises(PersonaConfigError) as info:
        load_personas(tmp_path)
    assert str(info.value) == "\n".join(info.value.errors)
    return [e.replace(f"{tmp_path}/", "") for e in info.value.errors]


def test_base_persona_loads(tmp_path: Path) -> None:
    write(tmp_path, "bot.yaml", BASE)
    personas = load_personas(tmp_path)
    assert personas.default.id == "bot"
    assert personas.default.source == tmp_path / "bot.yaml"
    assert personas.warnings == ()


def test_voice_not_of_model_names_line_and_suggests(tmp_path: Path) -> None:
    errors = errors_for(tmp_path, BASE.replace("voice: Charon", "voice: Aoedee"))
    assert errors == [
        "bot.yaml:2: voice: got 'Aoedee', expected one of Achernar, Achird, Algenib, Algieba, "
        "Alnilam, Aoede, Autonoe, Callirrhoe, …; did you mean 'Aoede'?"
    ]


def test_misspelt_top_level_key(tmp_path: Path) -> None:
    errors = errors_for(tmp_path, BASE + "grreting:\n  mode: wait\n  text: null\n")
    assert errors == [
        "bot.yaml:6: grreting: got unknown key 'grreting', expected one of model, voice, "
        "language, response_modality, timezone, default, numbers, system_instruction, "
        "system_instruction_file, custom_parameters, …; did you mean 'greeting'?"
    ]


def test_misspelt_nested_key(tmp_path: Path) -> None:
    errors = errors_for(tmp_path, BASE + "session:\n  temprature: 0.5\n")
    assert len(errors) == 1
    assert errors[0].startswith(
        "bot.yaml:7: session.temprature: got unknown key 'temprature', expected one of "
        "input_transcription, output_transcription,"
    )
    assert errors[0].endswith("; did you mean 'temperature'?")


def test_unknown_model_suggests(tmp_path: Path) -> None:
    errors = errors_for(tmp_path, BASE.replace("gemini-3.8-live", "gemini-3.8-lve"))
    assert errors == [
        "bot.yaml:1: model: got 'gemini-3.8-lve', expected one of gemini-3.8-live, "
        "gemini-3.8-live-extended-thinking, gemini-3.1-flash-live-preview, "
        "gemini-2.5-flash-native-audio-preview-09-2025, "
        "gemini-2.5-flash-native-audio-preview-12-2025, gemini-2.5-flash-native-audio-latest"
        "; did you mean 'gemini-3.8-live'?"
    ]


def test_retired_model_says_shut_down(tmp_path: Path) -> None:
    errors = errors_for(tmp_path, BASE.replace("gemini-3.8-live", "gemini-2.0-flash-live-001"))
    assert errors == [
        "bot.yaml:1: model: got 'gemini-2.0-flash-live-001', which was shut down on the "
        "Developer API (2025-12-09); expected a current Live model such as 'gemini-3.8-live'"
    ]


def test_text_modality_rejected_with_reason(tmp_path: Path) -> None:
    errors = errors_for(tmp_path, BASE + "response_modality: text\n")
    assert errors == [
        "bot.yaml:6: response_modality: got 'text', expected 'audio': TEXT replies cannot be "
        "heard on a phone call"
    ]


def test_language_on_native_audio_model_warns(tmp_path: Path) -> None:
    write(tmp_path, "bot.yaml", BASE + "language: es-ES\n")
    personas = load_personas(tmp_path)
    assert personas.warnings == (
        f"{tmp_path}/bot.yaml:6: language: gemini-3.8-live is a native-audio model and chooses "
        "the spoken language itself; 'es-ES' is sent but has no effect (say the language in "
        "system_instruction)",
    )


def test_long_calls_without_compression_get_a_note(tmp_path: Path) -> None:
    write(tmp_path, "bot.yaml", BASE + "limits:\n  max_call_secs: 1200\n")
    note = (
        f"{tmp_path}/bot.yaml:1: session.context_window_compression: got none with "
        "max_call_secs 1200, expected {trigger_tokens: N}: without compression the Live API "
        "ends an audio session at 15 minutes"
    )
    assert any(n.startswith(note) for n in load_personas(tmp_path).notes)
    # Within the limit, or with compression: no note.
    write(tmp_path, "bot.yaml", BASE + "limits:\n  max_call_secs: 900\n")
    assert not [n for n in load_personas(tmp_path).notes if "compression" in n]
    text = BASE + "session:\n  context_window_compression: {trigger_tokens: 20000}\n"
    write(tmp_path, "bot.yaml", text + "limits:\n  max_call_secs: 1200\n")
    assert not [n for n in load_personas(tmp_path).notes if "compression" in n]


def test_affective_dialog_on_model_without_it(tmp_path: Path) -> None:
    errors = errors_for(tmp_path, BASE + "session:\n  affective_dialog: true\n")
    assert errors == [
        "bot.yaml:7: session.affective_dialog: got true, expected false: gemini-3.8-live does "
        "not support affective dialog (use a gemini-2.5-flash-native-audio model, or remove the "
        "key)"
    ]


def test_v1alpha_feature_switches_api_version_with_note(tmp_path: Path) -> None:
    text = BASE.replace("gemini-3.8-live", "gemini-2.5-flash-native-audio-latest")
    write(tmp_path, "bot.yaml", text + "session:\n  affective_dialog: true\n")
    personas = load_personas(tmp_path)
    assert personas.default.api_version() == "v1alpha"
    assert (
        f"{tmp_path}/bot.yaml:7: session.affective_dialog: gemini-2.5-flash-native-audio-latest "
        "takes this feature only on the v1alpha API; this persona's sessions use api_version "
        "v1alpha" in personas.notes
    )
    write(tmp_path, "bot.yaml", text)
    assert load_personas(tmp_path).default.api_version() == "v1beta"


def test_proactive_false_on_always_model(tmp_path: Path) -> None:
    errors = errors_for(tmp_path, BASE + "session:\n  proactive_audio: false\n")
    assert errors == [
        "bot.yaml:7: session.proactive_audio: got false, expected true or no value: proactive "
        "audio is always on for gemini-3.8-live and it rejects false (remove the key)"
    ]


def test_proactive_on_model_without_it(tmp_path: Path) -> None:
    text = BASE.replace("gemini-3.8-live", "gemini-3.1-flash-live-preview")
    errors = errors_for(tmp_path, text + "session:\n  proactive_audio: true\n")
    assert errors == [
        "bot.yaml:7: session.proactive_audio: got true, expected no value: "
        "gemini-3.1-flash-live-preview does not support proactive audio (remove the key)"
    ]


THINKING = BASE.replace("gemini-3.8-live", "gemini-3.8-live-extended-thinking")


def test_thinking_level_required(tmp_path: Path) -> None:
    errors = errors_for(tmp_path, THINKING)
    assert errors == [
        "bot.yaml:1: session.thinking: got no thinking level, expected thinking: {level: …} with "
        "one of low, medium, high: gemini-3.8-live-extended-thinking requires a thinking level"
    ]


def test_thinking_budget_where_level_expected(tmp_path: Path) -> None:
    errors = errors_for(tmp_path, THINKING + "session:\n  thinking:\n    budget: 100\n")
    assert errors == [
        "bot.yaml:8: session.thinking.budget: got budget 100, expected level: "
        "gemini-3.8-live-extended-thinking takes a thinking level, not a token budget "
        "(e.g. level: low)"
    ]


def test_thinking_level_not_allowed_for_model(tmp_path: Path) -> None:
    errors = errors_for(tmp_path, THINKING + "session:\n  thinking:\n    level: minimal\n")
    assert errors == [
        "bot.yaml:8: session.thinking.level: got 'minimal', expected one of low, medium, high "
        "for gemini-3.8-live-extended-thinking"
    ]


def test_thinking_level_unknown_value(tmp_path: Path) -> None:
    errors = errors_for(tmp_path, THINKING + "session:\n  thinking:\n    level: hihg\n")
    assert errors == [
        "bot.yaml:8: session.thinking.level: got 'hihg', expected one of minimal, low, medium, high"
    ]


def test_thinking_level_on_budget_model(tmp_path: Path) -> None:
    text = BASE.replace("gemini-3.8-live", "gemini-2.5-flash-native-audio-latest")
    errors = errors_for(tmp_path, text + "session:\n  thinking:\n    level: low\n")
    assert errors == [
        "bot.yaml:8: session.thinking.level: got level 'low', expected budget: "
        "gemini-2.5-flash-native-audio-latest takes a thinking token budget, not a level "
        "(e.g. budget: 1024; 0 turns thinking off)"
    ]


def test_thinking_on_model_without_thinking(tmp_path: Path) -> None:
    errors = errors_for(tmp_path, BASE + "session:\n  thinking:\n    level: low\n")
    assert errors == [
        "bot.yaml:7: session.thinking: got a thinking setting, expected none: gemini-3.8-live "
        "does not think"
    ]


def test_unknown_template_variable(tmp_path: Path) -> None:
    errors = errors_for(tmp_path, BASE.replace("Be brief.", "Caller is ${calller}."))
    assert errors == [
        "bot.yaml:5: system_instruction: got unknown template variable ${calller}, expected one "
        "of called, caller, local_date, local_time, persona, timezone, weekday; did you mean "
        "'caller'?"
    ]


def test_undeclared_custom_parameter(tmp_path: Path) -> None:
    errors = errors_for(tmp_path, BASE.replace("Be brief.", "Account ${custom.account}."))
    assert errors == [
        "bot.yaml:5: system_instruction: got unknown template variable ${custom.account}, "
        "expected one of called, caller, local_date, local_time, persona, timezone, weekday; "
        "declare it under custom_parameters: {account: default}"
    ]


def test_number_not_e164_names_item_line(tmp_path: Path) -> None:
    text = BASE.replace('numbers: ["+15550001111"]', 'numbers:\n  - "+15550001111"\n  - "555-1234"')
    errors = errors_for(tmp_path, text)
    assert errors == [
        "bot.yaml:4: numbers: got '555-1234', expected an E.164 number like '+15551230000' (a "
        "'+', the country code and the number, digits only; quote it in YAML)"
    ]


def test_unquoted_number_stays_a_string_and_bare_digits_are_refused(tmp_path: Path) -> None:
    write(tmp_path, "bot.yaml", BASE.replace('["+15550001111"]', "[+15550001111]"))
    assert load_personas(tmp_path).default.numbers == ("+15550001111",)
    errors = errors_for(tmp_path, BASE.replace('["+15550001111"]', "[15550001111]"))
    assert errors == [
        "bot.yaml:4: numbers[0]: got 15550001111, expected a string (put it in quotes)"
    ]


def test_yaml_surprises_stay_strings() -> None:
    loaded = load_yaml("a: 012\nb: +15551234567\nc: no\nd: on\ne: 12\nf: 1.5\ng: true\nh: ~\n")
    assert loaded.data == {
        "a": "012", "b": "+15551234567", "c": "no", "d": "on",
        "e": 12, "f": 1.5, "g": True, "h": None,
    }  # fmt: skip
    assert loaded.lines[("d",)] == 4


def test_yaml_no_stays_text_in_string_field(tmp_path: Path) -> None:
    write(tmp_path, "bot.yaml", BASE + "greeting:\n  mode: say\n  text: no\n")
    assert load_personas(tmp_path).default.greeting.text == "no"


def test_number_claimed_twice(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", BASE)
    errors = errors_for(tmp_path, BASE.replace("default: true", "default: false"), "b.yaml")
    assert errors == [
        "b.yaml:4: numbers[0]: got '+15550001111', already answered by a.yaml:4; expected each "
        "number in one persona only"
    ]


def test_exactly_one_default(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", BASE)
    errors = errors_for(tmp_path, BASE.replace("+15550001111", "+15550002222"), "b.yaml")
    assert errors == [
        "b.yaml:3: default: got true in 2 personas (a.yaml:3, b.yaml:3), expected exactly one"
    ]
    (tmp_path / "a.yaml").unlink()
    (tmp_path / "b.yaml").unlink()
    errors = errors_for(tmp_path, BASE.replace("default: true", "default: false"))
    assert errors == [
        f"{tmp_path}: no persona has default: true, expected exactly one (the persona that "
        "answers numbers no other persona lists)"
    ]


def test_invalid_yaml_has_line(tmp_path: Path) -> None:
    errors = errors_for(tmp_path, BASE + "greeting:\n  mode: [say\n")
    assert len(errors) == 1
    assert errors[0].startswith("bot.yaml:8: invalid YAML:")


def test_duplicate_key_has_line(tmp_path: Path) -> None:
    errors = errors_for(tmp_path, BASE + "voice: Puck\n")
    assert errors == ["bot.yaml:6: duplicate key 'voice' (first at line 2)"]


def test_all_errors_of_all_files_collected(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", BASE.replace("voice: Charon", "voice: Bob") + "tempo: 1\n")
    errors = errors_for(tmp_path, BASE.replace("default: true", "default: false").replace(
        "+15550001111", "+15550002222").replace("gemini-3.8-live", "nope"), "b.yaml")  # fmt: skip
    assert [e.split(": ")[0:2] for e in errors] == [
        ["a.yaml:6", "tempo"],
        ["b.yaml:1", "model"],
    ]
    # pydantic errors come first; a capability error (voice) needs a schema-valid file.
    write(tmp_path, "a.yaml", BASE.replace("voice: Charon", "voice: Bob"))
    errors = errors_for(tmp_path, (tmp_path / "b.yaml").read_text(), "b.yaml")
    assert [e.split(": ")[0:2] for e in errors] == [["a.yaml:2", "voice"], ["b.yaml:1", "model"]]


def test_greeting_wait_needs_no_text_and_refuses_one(tmp_path: Path) -> None:
    write(tmp_path, "bot.yaml", BASE + "greeting:\n  mode: wait\n")
    assert load_personas(tmp_path).default.greeting.text is None
    errors = errors_for(tmp_path, BASE + "greeting:\n  mode: wait\n  text: Hi\n")
    assert errors == [
        "bot.yaml:6: greeting: got a text with mode 'wait', expected no text (the caller speaks)"
    ]


def test_greeting_mode_misspelt(tmp_path: Path) -> None:
    errors = errors_for(tmp_path, BASE + "greeting:\n  mode: sya\n  text: Hi\n")
    assert errors == [
        "bot.yaml:7: greeting.mode: got 'sya', expected one of 'say', 'instruct' or 'wait'; did "
        "you mean 'say'?"
    ]


def test_bad_timezone(tmp_path: Path) -> None:
    errors = errors_for(tmp_path, BASE + "timezone: Mars/Olympus\n")
    assert errors == [
        "bot.yaml:6: timezone: got 'Mars/Olympus', expected an IANA time zone like "
        "'Europe/Madrid' or 'UTC'"
    ]


def test_transfer_needs_target(tmp_path: Path) -> None:
    errors = errors_for(tmp_path, BASE + "tools:\n  transfer_call:\n    announcement: Hold on\n")
    assert errors == [
        "bot.yaml:7: tools.transfer_call.to: got nothing, expected a value (this key is required)"
    ]


def test_max_call_warning_must_precede_end(tmp_path: Path) -> None:
    errors = errors_for(tmp_path, BASE + "limits:\n  max_call_secs: 20\n")
    assert errors == [
        "bot.yaml:6: limits: got max_call_warning_secs 30 >= max_call_secs 20, expected the "
        "warning to come before the end"
    ]


def test_server_vad_off_needs_local_vad(tmp_path: Path) -> None:
    text = (
        BASE
        + "session:\n  activity_detection:\n    disabled: true\nbarge_in:\n  local_vad: false\n"
    )
    errors = errors_for(tmp_path, text)
    assert errors == [
        "bot.yaml:8: session.activity_detection.disabled: got true with barge_in.local_vad "
        "false, expected local_vad: true: with Gemini's activity detection off, the local VAD "
        "must mark when the caller speaks"
    ]


def test_id_key_is_reserved(tmp_path: Path) -> None:
    errors = errors_for(tmp_path, BASE + "id: other\n")
    assert errors == [
        "bot.yaml:6: id: got key 'id', expected no such key: the file name is the persona id"
    ]


def test_instruction_file_relative_and_subfolder_not_a_persona(tmp_path: Path) -> None:
    write(tmp_path, "prompts/bot.md", "Hello from ${caller}.")
    write(tmp_path, "prompts/not_a_persona.yaml", "this: is not a persona\n")
    by_file = "system_instruction_file: prompts/bot.md"
    write(tmp_path, "bot.yaml", BASE.replace("system_instruction: Be brief.", by_file))
    personas = load_personas(tmp_path)
    assert list(personas.personas) == ["bot"]
    assert personas.default.render_system_instruction({"caller": "+1555"}) == "Hello from +1555."


def test_instruction_file_missing(tmp_path: Path) -> None:
    text = BASE.replace("system_instruction: Be brief.", "system_instruction_file: prompts/x.md")
    errors = errors_for(tmp_path, text)
    assert errors == [
        "bot.yaml:5: system_instruction_file: got 'prompts/x.md', expected a readable UTF-8 "
        "file relative to the persona file (prompts/x.md: not found)"
    ]


def test_missing_instruction(tmp_path: Path) -> None:
    errors = errors_for(tmp_path, BASE.replace("system_instruction: Be brief.\n", ""))
    assert errors == [
        "bot.yaml:1: system_instruction: got no system_instruction, expected system_instruction "
        "(text) or system_instruction_file (a path relative to the persona file)"
    ]


def test_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(PersonaConfigError) as info:
        load_personas(tmp_path)
    assert info.value.errors == [f"{tmp_path}: no persona files (*.yaml), expected at least one"]


def test_example_personas_load_clean() -> None:
    personas = load_personas(Path(__file__).parent.parent / "config" / "personas")
    assert sorted(personas.personas) == ["appointments", "receptionist", "soporte_es"]
    assert personas.default.id == "receptionist"
    # The one expected warning: soporte_es sets a language on a native-audio model.
    assert [w.split(": ")[1] for w in personas.warnings] == ["language"]
    assert personas.get("soporte_es").api_version() == "v1alpha"  # type: ignore[union-attr]


def test_unreachable_persona_warns(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", BASE)
    write(tmp_path, "b.yaml", "system_instruction: Hi\n")
    assert load_personas(tmp_path).warnings == (
        f"{tmp_path}/b.yaml:1: numbers: got no numbers on a persona that is not the default, "
        "expected at least one: no call can reach this persona",
    )


def test_example_personas_use_every_field() -> None:
    used: set[tuple[str | int, ...]] = set()
    for file in (Path(__file__).parent.parent / "config" / "personas").glob("*.yaml"):
        # List items count for their field (http_tools[0].name is http_tools.name).
        lines = load_yaml(file.read_text()).lines
        used |= {tuple(p for p in k if not isinstance(p, int)) for k in lines}
    # A post-call webhook needs its secret in the environment to load, so the shipped examples
    # carry it commented out (appointments.yaml; README, Personas); tests/test_post_call.py.
    skip = ("id", "source", "post_call_webhook")
    missing = [".".join(k) for k in persona_fields() if k not in used and k[0] not in skip]
    assert missing == []


def test_audio_stream_end_needs_local_vad(tmp_path: Path) -> None:
    text = BASE + "audio_stream_end_silence_secs: 5\nbarge_in:\n  local_vad: false\n"
    errors = errors_for(tmp_path, text)
    assert errors == [
        "bot.yaml:6: audio_stream_end_silence_secs: got 5 with barge_in.local_vad false, "
        "expected local_vad: true: the local VAD tells when the caller speaks again, so the "
        "paused audio stream can resume"
    ]
