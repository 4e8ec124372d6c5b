"""``voicebot personas check|show``, the setup message each persona produces, rejections."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot import personas_cmd
from pipelines.personas import (
    Persona,
    call_variables,
    enabled_tools,
    explain_rejection,
    load_personas,
    setup_message,
)

pytestmark = pytest.mark.unit

EXAMPLES = Path(__file__).parent.parent / "config" / "personas"
NOW = datetime(2026, 3, 2, 13, 5, tzinfo=UTC)


def run_cmd(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    personas_cmd.configure(parser)
    return personas_cmd.run(parser.parse_args(argv))


@pytest.fixture(scope="module")
def examples() -> dict[str, Persona]:
    return dict(load_personas(EXAMPLES).personas)


def setup_of(persona: Persona) -> dict:
    variables = call_variables(persona, caller="+15557654321", called="+15551230001",
                               custom={"campaign": "spring"}, now=NOW)  # fmt: skip
    return setup_message(persona, variables)["setup"]


def test_check_examples_prints_table_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cmd(["check", str(EXAMPLES)]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "MODEL", "VOICE", "NUMBERS", "FEATURES"]
    assert lines[2].split()[:5] == ["receptionist", "(default)", "gemini-3.8-live", "Aoede",
                                    "+15551230001"]  # fmt: skip
    soporte = lines[3].split()
    assert soporte[:4] == ["soporte_es", "gemini-2.5-flash-native-audio-preview-12-2025", "Kore",
                           "+34910000001,+15551230002"]  # fmt: skip
    assert soporte[4].split(",") == ["affective", "proactive", "thinking=512", "local-vad",
                                     "end_call", "transfer", "max-duration", "v1alpha"]  # fmt: skip
    assert lines[-1] == f"3 persona(s) OK in {EXAMPLES}"
    assert "warning: " in err and "soporte_es.yaml:5: language:" in err


def test_check_bad_dir_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "sales.yaml").write_text("default: true\nvoice: Bob\nsystem_instruction: Hi\n")
    assert run_cmd(["check", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert f"error: {tmp_path}/sales.yaml:2: voice: got 'Bob', expected one of" in err
    assert err.endswith(f"1 error(s) in {tmp_path}\n")
    assert "ID" not in out


def test_show_prints_exact_setup(capsys: pytest.CaptureFixture[str], examples: dict) -> None:
    argv = ["show", "receptionist", "--personas", str(EXAMPLES), "--caller", "+15557654321",
            "--param", "campaign=spring", "--time", NOW.isoformat()]  # fmt: skip
    assert run_cmd(argv) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == {"setup": setup_of(examples["receptionist"])}
    assert 'Campaign: \\"spring\\"' in out  # JSON output: the quotes are escaped
    assert err.endswith("api_version: v1beta\n")


def test_show_unknown_id(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cmd(["show", "receptionst", "--personas", str(EXAMPLES)]) == 1
    assert (
        "persona: got 'receptionst', expected one of appointments, receptionist, soporte_es; "
        "did you mean 'receptionist'?" in capsys.readouterr().err
    )


def test_receptionist_setup_fields(examples: dict) -> None:
    setup = setup_of(examples["receptionist"])
    gen = setup["generationConfig"]
    assert setup["model"] == "models/gemini-3.8-live"
    assert gen["speech_config"]["voice_config"]["prebuilt_voice_config"]["voice_name"] == "Aoede"
    assert gen["response_modalities"] == ["AUDIO"]
    assert gen["temperature"] == 0.6
    assert "thinkingConfig" not in gen and "enableAffectiveDialog" not in gen
    assert setup["proactivity"] == {"proactive_audio": True}
    assert setup["contextWindowCompression"] == {"trigger_tokens": 25000, "sliding_window": {}}
    assert setup["realtimeInputConfig"] == {"automatic_activity_detection": {
        "disabled": False, "start_of_speech_sensitivity": "START_SENSITIVITY_HIGH",
        "end_of_speech_sensitivity": "END_SENSITIVITY_LOW", "prefix_padding_ms": 40,
        "silence_duration_ms": 600}}  # fmt: skip
    assert setup["inputAudioTranscription"] == {} and setup["outputAudioTranscription"] == {}
    text = setup["systemInstruction"]["parts"][0]["text"]
    assert "It is Monday, 08:05\n(America/New_York)" in text
    assert '+15557654321; they dialled +15551230001. Campaign: "spring".' in text
    [decl] = setup["tools"][0]["functionDeclarations"]
    assert decl["name"] == "end_call" and decl["behavior"] == "BLOCKING"
    assert "Thank the caller for calling Acme Dental." in decl["description"]
    assert decl["parameters"]["properties"]["reason"]["type"] == "STRING"


def test_soporte_setup_fields(examples: dict) -> None:
    persona = examples["soporte_es"]
    setup = setup_of(persona)
    gen = setup["generationConfig"]
    assert persona.api_version() == "v1alpha"
    assert gen["speech_config"]["language_code"] == "es-ES"
    assert gen["thinkingConfig"] == {"thinking_budget": 512}
    assert gen["enableAffectiveDialog"] is True
    assert setup["proactivity"] == {"proactive_audio": True}
    assert [d["name"] for d in setup["tools"][0]["functionDeclarations"]] == enabled_tools(persona)
    assert enabled_tools(persona) == ["end_call", "transfer_call"]
    assert "behavior" not in setup["tools"][0]["functionDeclarations"][0]  # 2.5: no tagging


def test_appointments_setup_fields(examples: dict) -> None:
    persona = examples["appointments"]
    setup = setup_of(persona)
    assert setup["generationConfig"]["thinkingConfig"] == {"thinking_level": "MEDIUM"}
    assert persona.tools_async is True
    assert {d["behavior"] for d in setup["tools"][0]["functionDeclarations"]} == {"NON_BLOCKING"}
    assert setup["systemInstruction"]["parts"][0]["text"].startswith(
        'You run the appointment line of the "Main Street" clinic. It is Monday 2026-03-02,\n'
        "07:05 local time."
    )
    assert persona.greeting_instruction({}) is None


def test_transcription_off_reaches_setup(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "default: true\nsystem_instruction: Hi\nsession:\n  input_transcription: false\n"
        "  output_transcription: false\n"
    )
    setup = setup_message(load_personas(tmp_path).default)["setup"]
    assert "inputAudioTranscription" not in setup and "outputAudioTranscription" not in setup
    assert setup["model"] == "models/gemini-3.8-live"


def test_explain_rejection(examples: dict) -> None:
    persona = examples["soporte_es"]
    reason = (
        'Invalid JSON payload received. Unknown name "enableAffectiveDialog" at '
        "'setup.generation_config': Cannot find field."
    )
    assert explain_rejection(persona, 1007, reason) == (
        f"{EXAMPLES}/soporte_es.yaml: Gemini closed the session with 1007 ({reason}); fix: the "
        "service does not know 'enableAffectiveDialog' for "
        "gemini-2.5-flash-native-audio-preview-12-2025 on API v1alpha: remove or change "
        "session.affective_dialog in the persona, or update pipelines/gemini_models.py if the "
        "model changed"
    )
    found = explain_rejection(persona, 1008, "models/x is not found for API version v1beta, or is")
    assert "change model in the persona" in found
    assert "quota" in explain_rejection(persona, 1011, "You exceeded your current quota, please")
    assert "thinking" in explain_rejection(
        persona, 1007, "Thinking level must be specified for this model."
    )
    assert "response_modality" in explain_rejection(
        persona, 1007, "The requested combination of response modalities (TEXT) is not supported"
    )
    assert "not a persona problem" in explain_rejection(
        persona, 1011, "Internal error encountered."
    )
