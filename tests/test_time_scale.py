"""The test time scale: one setting that scales the server's own timers, never audio."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pipecat.frames.frames import BotStartedSpeakingFrame, BotStoppedSpeakingFrame

from bot.settings import Settings, SettingsError
from pipelines.call.control import CallControl
from pipelines.call.resources import ProcessResources
from pipelines.personas import load_personas

pytestmark = [pytest.mark.unit, pytest.mark.timed]  # real timers: runs with the calls

PERSONAS = load_personas(Path(__file__).parent / "personas")


def test_time_scale_defaults_to_real_time_and_reads_the_environment() -> None:
    assert Settings.from_env({}).time_scale == 1.0
    assert Settings.from_env({"VOICEBOT_TIME_SCALE": "0.1"}).time_scale == 0.1


@pytest.mark.parametrize("raw", ["0", "-1", "fast"])
def test_time_scale_must_be_a_positive_number(raw: str) -> None:
    with pytest.raises(SettingsError, match="VOICEBOT_TIME_SCALE"):
        Settings.from_env({"VOICEBOT_TIME_SCALE": raw})


def test_process_resources_default_to_real_time() -> None:
    assert ProcessResources.__dataclass_fields__["time_scale"].default == 1.0


def test_call_control_refuses_a_non_positive_scale() -> None:
    async def never(*_args: object) -> None:
        raise AssertionError("not called")

    with pytest.raises(ValueError, match="time_scale got 0"):
        CallControl(
            PERSONAS.get("patient"),
            instruct=never,  # type: ignore[arg-type]
            hang_up=never,
            redirect=None,
            wait_played=never,
            time_scale=0,
        )


async def _idle_timeline(scale: float) -> tuple[list[tuple[float, str]], float]:
    """Run patient.yaml's limits (idle 1.5 s, one re-prompt) at ``scale`` with a silent line."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    events: list[tuple[float, str]] = []
    done = asyncio.Event()

    async def instruct(text: str) -> bool:
        events.append((loop.time() - start, text))
        # The bot says it at once and it is played (audio is not what is timed here).
        control.observe(BotStartedSpeakingFrame())
        control.observe(BotStoppedSpeakingFrame())
        return True

    async def hang_up(reason: str) -> None:
        events.append((loop.time() - start, f"hang up: {reason}"))
        done.set()

    async def wait_played(_secs: float) -> None:
        return None

    control = CallControl(
        PERSONAS.get("patient"),
        instruct=instruct,
        hang_up=hang_up,
        redirect=None,
        wait_played=wait_played,
        time_scale=scale,
    )
    control.start()
    try:
        await asyncio.wait_for(done.wait(), 5 * scale + 2)
    finally:
        await control.stop()
    return events, loop.time() - start


async def test_idle_reprompt_and_goodbye_come_after_scaled_silences() -> None:
    scale = 0.1
    events, total = await _idle_timeline(scale)

    texts = [text for _, text in events]
    assert "Are you still there?" in texts[0]
    assert "Goodbye for now." in texts[1]
    assert texts[2] == "hang up: caller idle"
    # The re-prompt comes after 1.5 s of silence, scaled (plus at most one scaled tick).
    assert 1.5 * scale <= events[0][0] < (1.5 + 0.25 + 0.1) * scale, events
    # The goodbye after another idle period, scaled.
    assert 1.5 * scale <= events[1][0] - events[0][0] < (1.5 + 0.25 + 0.1) * scale, events
    # The hang-up follows the played goodbye at once, and the whole idle ending took about a
    # tenth of its real-time length (2 x 1.5 s).
    assert events[2][0] - events[1][0] < 0.1, events
    assert total < 2 * (1.5 + 0.25 + 0.1) * scale + 0.1
