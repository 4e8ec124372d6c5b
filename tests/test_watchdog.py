"""The model watchdog's decisions, its clips and the persona fields that choose them.

Timers run for real at tens of milliseconds; the callbacks record what the call would do.
"""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipelines.call.clip_audio import CLIP_RATE_HZ, Clip, load_clip
from pipelines.call.turns import USER_SPEECH_TIMEOUT_SECS
from pipelines.call.watchdog import ModelWatchdog, WatchdogSettings
from pipelines.personas.loader import load_persona_file
from pipelines.personas.schema import SHIPPED_CLIPS

pytestmark = [pytest.mark.unit, pytest.mark.timed]  # real timers: runs with the calls

HOLD = Clip("hold.wav", bytes(int(CLIP_RATE_HZ * 2 * 0.02)))  # 20 ms
APOLOGY = Clip("apology.wav", bytes(int(CLIP_RATE_HZ * 2 * 0.02)))
FAST = WatchdogSettings(hold_after_secs=0.1, reconnect_after_secs=0.25, give_up_after_secs=0.5)


class Call:
    """The call side of a watchdog: what it was asked to do, in order."""

    def __init__(self, settings: WatchdogSettings = FAST, greeting: bool = False) -> None:
        self.did: list[str] = []
        self.dog = ModelWatchdog(
            settings,
            hold=HOLD,
            apology=APOLOGY,
            play=self.play,
            reconnect=self.reconnect,
            give_up=self.give_up,
            nudge=self.nudge,
            expect_greeting=greeting,
            label="test:",
        )

    async def play(self, clip: Clip, final: bool) -> None:
        self.did.append(f"play {clip.name}{' final' if final else ''}")

    async def reconnect(self) -> bool:
        self.did.append("reconnect")
        return True

    async def give_up(self, reason: str) -> None:
        self.did.append(f"give up: {reason}")

    async def nudge(self, cut_off: bool) -> None:
        self.did.append(f"nudge cut_off={cut_off}")


def sc(**flags: bool) -> SimpleNamespace:
    fields = {"interrupted": False, "turn_complete": False, "generation_complete": False}
    return SimpleNamespace(**{**fields, **flags})


async def test_a_late_setup_gets_the_holding_phrase_then_the_greeting_is_awaited():
    call = Call(greeting=True)
    call.dog.start()
    await asyncio.sleep(0.17)
    assert call.did == ["play hold.wav"]
    call.dog.session_ready()  # the greeting is still owed: the same silence goes on
    call.dog.model_audio(0.02)
    call.dog.server_content(sc(generation_complete=True))
    await asyncio.sleep(0.3)
    assert call.did == ["play hold.wav"]
    assert 0.1 <= call.dog.trouble_secs < 0.3
    call.dog.stop()


async def test_a_persona_that_waits_for_the_caller_watches_the_setup_from_the_callers_turn():
    call = Call(greeting=False)
    call.dog.start()
    await asyncio.sleep(0.15)
    assert call.did == []  # silence before the caller speaks is expected
    call.dog.caller_turn_ended()
    await asyncio.sleep(0.12)
    assert call.did == ["play hold.wav"]
    call.dog.session_ready()  # the caller's reply is still owed
    call.dog.model_audio(0.05)
    call.dog.server_content(sc(turn_complete=True))
    await asyncio.sleep(0.3)
    assert call.did == ["play hold.wav"]
    call.dog.stop()


async def test_no_reply_holds_reconnects_nudges_then_apologises_and_hangs_up():
    call = Call()
    call.dog.start()
    call.dog.session_ready()
    call.dog.caller_turn_ended()
    await asyncio.sleep(0.3)
    # Holds at 0.1 s and again 0.1 s after the first clip ended, the reconnect at 0.25 s.
    assert call.did == ["play hold.wav", "play hold.wav", "reconnect"]
    call.dog.session_ready()  # the reconnect's new session: the model is asked to answer
    await asyncio.sleep(0.01)
    assert "nudge cut_off=False" in call.did
    await asyncio.sleep(0.35)
    assert call.did[-2:] == ["play apology.wav final", "give up: model unresponsive (reply)"]
    assert call.did.count("reconnect") == 1
    assert call.dog.firings[-1] == "apology"


async def test_audio_arriving_in_time_fires_nothing():
    call = Call()
    call.dog.session_ready()
    call.dog.caller_turn_ended()
    await asyncio.sleep(0.05)
    for _ in range(4):  # a reply sent faster than real time: the caller hears 0.4 s
        call.dog.model_audio(0.1)
    await asyncio.sleep(0.3)  # still inside the audio plus hold_after: no silence heard yet
    assert call.did == []
    call.dog.server_content(sc(generation_complete=True))
    await asyncio.sleep(0.3)
    assert call.did == []
    call.dog.stop()


async def test_a_reply_that_stops_mid_answer_gets_the_holding_phrase_after_its_audio():
    call = Call()
    call.dog.session_ready()
    call.dog.model_audio(0.1)  # then nothing, generation not complete
    await asyncio.sleep(0.15)
    assert call.did == []  # 0.1 s still playing + less than hold_after of silence
    await asyncio.sleep(0.1)
    assert call.did == ["play hold.wav"]
    call.dog.model_audio(0.1)  # it resumed
    call.dog.server_content(sc(turn_complete=True))
    await asyncio.sleep(0.4)
    assert call.did == ["play hold.wav"]
    call.dog.stop()


async def test_a_turn_closed_without_audio_is_the_models_choice():
    call = Call()
    call.dog.session_ready()
    call.dog.caller_turn_ended()
    call.dog.server_content(sc(turn_complete=True))
    await asyncio.sleep(0.3)
    assert call.did == []
    call.dog.stop()


async def test_the_interrupted_generations_turn_complete_does_not_disarm_the_reply_wait():
    call = Call()
    call.dog.session_ready()
    call.dog.model_audio(0.01)
    call.dog.interrupted()  # local barge-in
    call.dog.caller_turn_ended()  # the caller's words: a reply is due
    call.dog.server_content(sc(interrupted=True))
    call.dog.server_content(sc(turn_complete=True))  # closes the interrupted generation
    await asyncio.sleep(0.15)
    assert call.did == ["play hold.wav"]
    call.dog.stop()


async def test_the_caller_talking_ends_the_wait_and_over_bot_audio_arms_nothing():
    call = Call()
    call.dog.session_ready()
    call.dog.caller_turn_ended()
    call.dog.caller_started()
    await asyncio.sleep(0.15)
    assert call.did == []
    call.dog.model_audio(1.0)
    call.dog.server_content(sc(generation_complete=True))
    call.dog.caller_turn_ended()  # a backchannel over audible bot audio
    await asyncio.sleep(0.2)
    assert call.did == []
    call.dog.stop()


async def test_a_connection_gap_while_a_reply_is_owed_says_the_holding_phrase_at_once():
    call = Call(WatchdogSettings(hold_after_secs=1.0, reconnect_after_secs=5.0,
                                 give_up_after_secs=9.0))  # fmt: skip
    call.dog.session_ready()
    await call.dog.connection_gap(1.0)  # nobody owes anything: the caller hears nothing odd
    assert call.did == []
    call.dog.caller_turn_ended()
    await call.dog.connection_gap(1.0)
    assert call.did == ["play hold.wav"]
    assert call.dog.firings == ["hold"]
    call.dog.stop()


def test_settings_scale_with_time_and_take_the_vad_lag():
    persona = SimpleNamespace(
        watchdog=SimpleNamespace(
            hold_after_secs=3.0, reconnect_after_secs=8.0, give_up_after_secs=15.0
        ),
        barge_in=SimpleNamespace(local_vad=True, stop_secs=0.8),
    )
    s = WatchdogSettings.for_persona(persona, 0.5)
    assert (s.hold_after_secs, s.reconnect_after_secs, s.give_up_after_secs) == (1.5, 4.0, 7.5)
    assert s.turn_end_lag_secs == 0.75  # at most half the hold delay
    # At full time the whole lag is taken back: the VAD's 0.8 s of quiet and the turn
    # strategy's 0.6 s for the caller to go on (it was 0.8 alone: the caller heard 3.6 s of
    # silence before the holding phrase, not 3).
    full = WatchdogSettings.for_persona(persona, 1.0)
    assert full.turn_end_lag_secs == pytest.approx(0.8 + USER_SPEECH_TIMEOUT_SECS)
    no_vad = SimpleNamespace(watchdog=persona.watchdog, barge_in=SimpleNamespace(local_vad=False))
    assert WatchdogSettings.for_persona(no_vad, 1.0).turn_end_lag_secs == 0.0


# clips and persona fields ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["hold_en.wav", "apology_en.wav", "hold_es.wav", "apology_es.wav"])
def test_shipped_clips_load_at_model_rate(name):
    path = SHIPPED_CLIPS / name
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000)
        secs = w.getnframes() / 8000
    clip = load_clip(path)
    assert abs(clip.secs - secs) < 0.01
    assert 1.0 < clip.secs < 7.0
    assert max(clip.audio) > 0  # not silence


def _write_wav(path: Path, rate: int = 8000, channels: int = 1) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x10\x00" * rate * channels)


PERSONA = """\
model: gemini-3.8-live
voice: Charon
system_instruction: "Test."
{extra}
"""


def test_persona_clips_default_by_language(tmp_path):
    file = tmp_path / "es.yaml"
    file.write_text(PERSONA.format(extra="language: es-ES"))
    result = load_persona_file(file)
    assert result.persona is not None, result.errors
    assert [p.name for p in result.persona.clip_paths()] == ["hold_es.wav", "apology_es.wav"]


def test_persona_clips_relative_to_the_persona_file(tmp_path):
    (tmp_path / "clips").mkdir()
    _write_wav(tmp_path / "clips" / "mine.wav", rate=16000)
    file = tmp_path / "own.yaml"
    file.write_text(PERSONA.format(extra="watchdog: {holding_clip: clips/mine.wav}"))
    result = load_persona_file(file)
    assert result.persona is not None, result.errors
    hold, apology = result.persona.clip_paths()
    assert hold == tmp_path / "clips" / "mine.wav"
    assert apology.name == "apology_en.wav"
    assert load_clip(hold).secs == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (None, "no such file"),
        (lambda p: _write_wav(p, channels=2), "2 channels"),
        (lambda p: _write_wav(p, rate=44100), "44100 Hz"),
        (lambda p: p.write_bytes(b"not a wav"), "not a readable WAV file"),
    ],
)
def test_a_bad_clip_is_refused_naming_file_field_and_fix(tmp_path, make, problem):
    clip = tmp_path / "bad.wav"
    if make is not None:
        make(clip)
    file = tmp_path / "bad_clip.yaml"
    file.write_text(PERSONA.format(extra="watchdog:\n  apology_clip: bad.wav"))
    result = load_persona_file(file)
    assert result.persona is None
    (error,) = result.errors
    assert error.startswith(f"{file}:5: watchdog.apology_clip: got 'bad.wav'"), error
    assert problem in error
    assert "expected a mono 16-bit WAV at 8, 16 or 24 kHz" in error
    assert "sox" in error  # the fix


def test_thresholds_out_of_order_are_refused(tmp_path):
    file = tmp_path / "order.yaml"
    file.write_text(PERSONA.format(extra="watchdog: {hold_after_secs: 5, reconnect_after_secs: 4}"))
    result = load_persona_file(file)
    assert result.persona is None
    assert "expected hold < reconnect < give_up" in result.errors[0], result.errors
