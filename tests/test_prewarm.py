"""Pre-warming's switches and the simulated side's stream connect, without sockets."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.settings import Settings, SettingsError
from pipelines.personas import PersonaConfigError, load_personas
from sim.caller.plan import DEFAULT_STREAM_CONNECT_SECS, CallPlan
from sim.emulator import EmulatorConfig
from sim.loadtest.scenario import load_scenario

pytestmark = pytest.mark.unit

PERSONA = """\
model: gemini-3.8-live
voice: Charon
default: true
system_instruction: Be brief.
"""


def test_prewarm_is_on_unless_the_environment_turns_it_off() -> None:
    assert Settings.from_env({}).prewarm is True
    assert Settings.from_env({"VOICEBOT_PREWARM": "0"}).prewarm is False
    with pytest.raises(SettingsError, match="VOICEBOT_PREWARM"):
        Settings.from_env({"VOICEBOT_PREWARM": "sometimes"})


def test_a_persona_opts_out_and_a_bad_value_names_the_field(tmp_path: Path) -> None:
    (tmp_path / "bot.yaml").write_text(PERSONA + "prewarm: false\n")
    assert load_personas(tmp_path).personas["bot"].prewarm is False
    (tmp_path / "bot.yaml").write_text(PERSONA + "prewarm: sometimes\n")
    with pytest.raises(PersonaConfigError) as info:
        load_personas(tmp_path)
    assert "bot.yaml:5: prewarm:" in str(info.value)


def test_the_lab_is_as_slow_as_twilio_and_the_live_api() -> None:
    assert CallPlan().stream_connect_secs == DEFAULT_STREAM_CONNECT_SECS >= 0.2
    assert EmulatorConfig().setup_ms >= 300
    scenario = load_scenario("default")
    assert scenario.stream_connect_ms == DEFAULT_STREAM_CONNECT_SECS * 1000
    assert scenario.build_plan().stream_connect_secs == DEFAULT_STREAM_CONNECT_SECS
