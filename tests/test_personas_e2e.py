"""Every persona field reaches the ``setup`` the emulator records, through the real SDK.

A call connects with ``Persona.connect_config`` (the model and complete ``LiveConnectConfig``)
through google-genai's public ``client.aio.live.connect``, with ``api_version()`` in
``http_options``; here that connection is opened to the loopback emulator over TLS, and the
recorded setup must equal ``setup_message(persona)``, the offline rendering ``voicebot personas
show`` prints. (That ``connect_config`` equals what Pipecat's service assembled before is
``tests/test_persona_setup.py``.)
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pipelines.personas import (
    Persona,
    call_variables,
    enabled_tools,
    load_personas,
    setup_message,
)

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).parent.parent / "config" / "personas"
NOW = datetime(2026, 3, 2, 13, 5, tzinfo=UTC)


async def recorded_setup(persona: Persona, variables: dict[str, str]) -> dict[str, Any]:
    from google import genai
    from google.genai.types import HttpOptions

    from sim.emulator import LiveEmulator

    model, config = persona.connect_config(persona.render_system_instruction(variables))
    async with LiveEmulator() as emu:
        client = genai.Client(
            api_key="test-key",
            http_options=HttpOptions(
                base_url=emu.url,
                api_version=persona.api_version(),
                async_client_args={"ssl": emu.client_ssl_context()},
            ),
        )
        async with asyncio.timeout(10), client.aio.live.connect(model=model, config=config):
            pass
        rejections = [c for c in emu.closes if c[1] in (1007, 1008)]
        assert rejections == [], rejections
        [records] = emu.recordings.values()
        msg: dict[str, Any] = records[0]["msg"]
        return msg


LEGACY = """\
model: gemini-3.1-flash-live-preview
voice: Puck
default: true
system_instruction: Legacy line for ${called}.
session:
  input_transcription: false
  output_transcription: false
  thinking: {level: minimal}
  activity_detection: {disabled: true}
barge_in: {local_vad: true}
"""


# Called from this module, the SDK's deprecation of generation_config is attributed here.
@pytest.mark.filterwarnings("ignore:Setting `LiveConnectConfig.generation_config`")
@pytest.mark.parametrize("persona_id", ["receptionist", "soporte_es", "appointments", "legacy"])
async def test_setup_recorded_by_emulator_matches_show(persona_id: str, tmp_path: Path) -> None:
    if persona_id == "legacy":
        (tmp_path / "legacy.yaml").write_text(LEGACY)
    found = load_personas(tmp_path if persona_id == "legacy" else EXAMPLES).get(persona_id)
    assert found is not None
    persona: Persona = found
    variables = call_variables(
        persona, caller="+15557654321", called="+15551230001", custom={}, now=NOW
    )
    expected = setup_message(persona, variables)
    recorded = await recorded_setup(persona, variables)
    assert recorded == expected
    setup = recorded["setup"]
    gen = setup["generationConfig"]
    # Each persona field that has a wire form is present with the persona's value.
    assert setup["model"] == f"models/{persona.model}"
    assert gen["speech_config"]["voice_config"]["prebuilt_voice_config"]["voice_name"] == (
        persona.voice
    )
    assert gen["response_modalities"] == ["AUDIO"]
    if persona.language:
        assert gen["speech_config"]["language_code"] == persona.language
    s = persona.session
    assert gen.get("temperature") == s.temperature
    assert gen.get("enableAffectiveDialog", False) == s.affective_dialog
    if s.thinking is not None:
        key, value = (
            ("thinking_level", s.thinking.level)
            if s.thinking.level
            else ("thinking_budget", s.thinking.budget)
        )
        assert gen["thinkingConfig"] == {key: value}
    if s.proactive_audio is not None:
        assert setup["proactivity"] == {"proactive_audio": s.proactive_audio}
    if s.context_window_compression is not None:
        assert setup["contextWindowCompression"]["trigger_tokens"] == (
            s.context_window_compression.trigger_tokens
        )
    detection = setup["realtimeInputConfig"]["automatic_activity_detection"]
    ad = s.activity_detection
    assert detection["disabled"] == ad.disabled
    assert detection.get("prefix_padding_ms") == ad.prefix_padding_ms
    assert detection.get("silence_duration_ms") == ad.silence_duration_ms
    if ad.start_sensitivity:
        assert detection["start_of_speech_sensitivity"].endswith(ad.start_sensitivity.upper())
    assert ("inputAudioTranscription" in setup) == s.input_transcription
    assert ("outputAudioTranscription" in setup) == s.output_transcription
    assert setup["systemInstruction"]["parts"][0]["text"] == (
        persona.render_system_instruction(variables)
    )
    names = [d["name"] for d in setup.get("tools", [{}])[0].get("functionDeclarations", [])]
    assert names == enabled_tools(persona) + [t.name for t in persona.http_tools]


# Called from this module, the SDK's deprecation of generation_config is attributed here.
@pytest.mark.filterwarnings("ignore:Setting `LiveConnectConfig.generation_config`")
async def test_rejection_is_explained() -> None:
    """A setup the checks would refuse (forced past them) is closed; the message names the fix."""
    from google import genai
    from google.genai import errors
    from google.genai.types import HttpOptions

    from pipelines.personas import explain_rejection
    from pipelines.personas.setup import build_connect_config
    from sim.emulator import LiveEmulator

    good = load_personas(EXAMPLES).get("soporte_es")
    assert good is not None
    # soporte_es needs v1alpha for affective dialog; force v1beta to get the service's 1007.
    persona = good.model_copy(update={"model": "gemini-2.5-flash-native-audio-latest"})
    model, config = build_connect_config(persona)
    async with LiveEmulator() as emu:
        client = genai.Client(
            api_key="test-key",
            http_options=HttpOptions(
                base_url=emu.url,
                api_version="v1beta",
                async_client_args={"ssl": emu.client_ssl_context()},
            ),
        )
        with pytest.raises(errors.APIError) as info:
            async with client.aio.live.connect(model=model, config=config):
                pass
    message = explain_rejection(persona, info.value.code, str(info.value.details))
    assert message.startswith(f"{EXAMPLES}/soporte_es.yaml: Gemini closed the session with 1007 (")
    assert "remove or change session." in message
