"""Pipecat's GeminiLiveLLMService in a pipeline against the Live API emulator."""

from __future__ import annotations

import os

import pytest
from google.genai.types import HttpOptions
from pipecat.frames.frames import LLMContextFrame, LLMFullResponseEndFrame, TTSAudioRawFrame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.services.google.gemini_live.llm import GeminiLiveLLMService
from pipecat.tests.utils import SleepFrame, run_test

from sim.emulator import EmulatorConfig, LiveEmulator

pytestmark = pytest.mark.e2e
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")


async def test_pipecat_greeting_arrives_as_24k_tts_audio() -> None:
    config = EmulatorConfig(think_ms=20, pace=0.0, wait_playback=False)
    async with LiveEmulator(config) as emu:
        llm = GeminiLiveLLMService(
            api_key="test-key",
            system_instruction="Greet the caller.",
            http_options=HttpOptions(
                base_url=emu.url, async_client_args={"ssl": emu.client_ssl_context()}
            ),
        )
        context = LLMContext(messages=[{"role": "user", "content": "Hello?"}])
        down, _ = await run_test(
            llm, frames_to_send=[LLMContextFrame(context=context), SleepFrame(sleep=1.0)]
        )
        recorded = emu.recordings["s1"]
    audio = [f for f in down if isinstance(f, TTSAudioRawFrame)]
    assert audio and {f.sample_rate for f in audio} == {24_000}
    # Pipecat 1.14 reads only parts[0] of a modelTurn, and 3.x bundles three 80 ms parts a
    # message: plain Pipecat plays about a third of the greeting. CallGeminiLive splits the
    # messages and plays it whole (tests/test_wire_rules_e2e.py).
    heard = sum(len(f.audio) for f in audio) / 48_000
    assert 0.3 * 3.869 < heard < 0.4 * 3.869
    # Pipecat's 3.x nudge (realtime text " ") after the greeting trigger is not a second reply.
    assert {"realtime_input": {"text": " "}} in [r["msg"] for r in recorded]
    assert sum(isinstance(f, LLMFullResponseEndFrame) for f in down) == 1
    setup = recorded[0]["msg"]["setup"]
    assert setup["model"] == "models/gemini-3.8-live"
    assert setup["generationConfig"]["speech_config"]["voice_config"]["prebuilt_voice_config"] == {
        "voice_name": "Charon"
    }
