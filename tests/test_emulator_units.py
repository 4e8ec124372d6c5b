"""Unit tests of the emulator's pieces: setup schema, VAD, wire helpers, fault parsing."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from sim.bench.emulator_bench import audio_messages
from sim.caller.line_noise import dbfs_of_pcm
from sim.emulator import protocol
from sim.emulator.config import parse_faults, parse_tool_script
from sim.emulator.misbehaviour import Misbehaviour, Trigger, parse_trigger
from sim.emulator.schema import Rejection, VadParams, validate_setup
from sim.emulator.vad import TurnDetector

pytestmark = pytest.mark.unit


def test_urlsafe_base64_is_translated_before_decoding() -> None:
    raw = bytes(range(256)) * 3
    assert protocol.b64decode(base64.urlsafe_b64encode(raw).decode()) == raw
    assert protocol.b64decode(base64.b64encode(raw).decode()) == raw


def test_close_reason_is_cut_to_123_bytes_without_splitting_utf8() -> None:
    cut = protocol.close_reason("é" * 100)
    assert len(cut) == 122 and cut.decode() == "é" * 61


def test_path_versions_and_repeated_slashes() -> None:
    path = "//ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContent"
    assert protocol.match_path(path) == "v1alpha"
    assert protocol.match_path("/x" + path.replace("v1alpha", "v2")) is None


def test_setup_accepts_both_casings_and_reads_vad() -> None:
    info = validate_setup(
        {
            "model": "models/gemini-3.8-live",
            "generation_config": {"responseModalities": ["AUDIO"], "speech_config": {}},
            "realtimeInputConfig": {
                "automatic_activity_detection": {"silenceDurationMs": 900, "disabled": True},
                "activity_handling": "NO_INTERRUPTION",
            },
            "sessionResumption": {"handle": "h1"},
            "historyConfig": {"initial_history_in_client_content": True},
        },
        "v1",
    )
    assert (info.vad.silence_duration_ms, info.vad.disabled, info.barge_in) == (900, True, False)
    assert info.resume_handle == "h1"


def test_unknown_name_is_found_in_lists_too() -> None:
    setup = {"model": "gemini-3.8-live", "tools": [{"functionDeclarations": [{"nmae": "x"}]}]}
    with pytest.raises(Rejection) as info:
        validate_setup(setup, "v1beta")
    assert info.value.code == 1007
    assert "\"nmae\" at 'setup.tools[0].function_declarations[0]'" in info.value.reason


def test_blocking_tool_rejected_on_extended_thinking() -> None:
    setup = {
        "model": "gemini-3.8-live-extended-thinking",
        "generationConfig": {"thinkingConfig": {"thinkingLevel": "LOW"}},
        "tools": [{"functionDeclarations": [{"name": "x", "behavior": "BLOCKING"}]}],
    }
    with pytest.raises(Rejection) as info:
        validate_setup(setup, "v1beta")
    assert (info.value.code, info.value.reason) == (1007, "Request contains an invalid argument.")


def _tone(secs: float, rate: int, amp: float) -> bytes:
    t = np.arange(int(secs * rate)) / rate
    return (amp * 32767 * np.sin(2 * np.pi * 300 * t)).astype("<i2").tobytes()


def test_vad_finds_one_turn_and_respects_silence_duration() -> None:
    vad = TurnDetector(VadParams(silence_duration_ms=300), 16_000)
    audio = _tone(0.5, 16_000, 0.0) + _tone(1.0, 16_000, 0.3) + _tone(0.2, 16_000, 0.0)
    audio += _tone(0.5, 16_000, 0.3) + _tone(0.5, 16_000, 0.0)
    starts = ends = 0
    for i in range(0, len(audio), 640):
        events = vad.feed(audio[i : i + 640])
        starts += events.started
        ends += events.ended
    assert (starts, ends) == (1, 1)  # the 0.2 s gap is shorter than 300 ms
    assert vad.finished is not None
    assert vad.finished.size / 16_000 == pytest.approx(1.7 + 0.2, abs=0.05)  # with pre-roll


def test_vad_low_start_sensitivity_ignores_quiet_speech() -> None:
    quiet = _tone(1.0, 16_000, 0.05)  # about -29 dBFS: over HIGH (-33), under LOW (-27)
    high = TurnDetector(VadParams(), 16_000)
    low = TurnDetector(VadParams(start_sensitivity="START_SENSITIVITY_LOW"), 16_000)
    assert high.feed(quiet).started and not low.feed(quiet).started


def test_fault_and_tool_call_parsing() -> None:
    plan = parse_faults(["goaway_after=5,time_left=2", "max_sessions=10", "forget_handles=true"])
    assert (plan.goaway_after, plan.time_left, plan.max_sessions, plan.forget_handles) == (
        5.0, 2.0, 10, True,
    )  # fmt: skip
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        parse_faults(["goaway=1"])
    script = parse_tool_script('2:lookup:{"id": "42"}')
    assert (script.after_turn, script.name, script.args) == (2, "lookup", {"id": "42"})


def test_misbehaviour_triggers_parse_and_draws_are_seeded() -> None:
    plan = parse_faults(["missed_bargein=0.25,empty_turn=turn:3,seed=9"])
    assert (plan.missed_bargein, plan.empty_turn, plan.seed) == ("0.25", "turn:3", 9)
    with pytest.raises(ValueError, match="expected a probability from 0 to 1"):
        parse_faults(["phantom_interrupt=2"])
    assert parse_trigger("empty_turn", "turn:3") == Trigger(turn=3)

    def draws(seed: int, session_id: str) -> list[bool]:
        m = Misbehaviour({"missed_bargein": "0.5"}, seed, session_id)
        return [m.happens("missed_bargein", turn) for turn in range(40)]

    assert draws(1, "s1") == draws(1, "s1")  # reproducible
    assert draws(1, "s1") != draws(2, "s1") and draws(1, "s1") != draws(1, "s2")
    assert 5 < sum(draws(1, "s1")) < 35
    by_turn = Misbehaviour({"empty_turn": "turn:3"}, 0, "s1")
    assert [by_turn.happens("empty_turn", t) for t in (1, 2, 3, 4)] == [False, False, True, False]


@pytest.mark.parametrize("color", ["pink", "white"])
@pytest.mark.parametrize("dbfs", [-45.0, -40.0])
def test_vad_is_not_fooled_by_the_callers_line_noise(color: str, dbfs: float) -> None:
    # The simulated caller's own noise (sim.caller.line_noise), as the server forwards it: mu-law
    # 8 kHz upsampled to 16 kHz. It follows a stretch of digital silence (greeting grace).
    import audioop

    import soxr

    from sim.caller.line_noise import noise_bank
    from sim.emulator.caller_audio import read_caller_wav
    from sim.emulator.config import ASSETS_DIR

    noise8 = np.frombuffer(audioop.ulaw2lin(b"".join(noise_bank(dbfs, color).raw), 2), "<i2")

    def to16k(x: np.ndarray) -> bytes:
        y = soxr.resample(x.astype(np.float32) / 32768, 8000, 16000)
        return (np.clip(y, -1, 1) * 32767).astype("<i2").tobytes()

    def noise(secs: float) -> np.ndarray:
        return np.resize(noise8, int(secs * 8000)).astype(np.int32)

    speech = read_caller_wav(ASSETS_DIR / "caller_question.wav", 8000).astype(np.int32)
    line = np.concatenate([np.zeros(8000, np.int32), noise(20.0)])
    talk = np.concatenate([noise(1.0), speech + noise(speech.size / 8000), noise(1.0)])
    for sensitivity in ("HIGH", "LOW"):
        params = VadParams(
            start_sensitivity=f"START_SENSITIVITY_{sensitivity}",
            end_sensitivity=f"END_SENSITIVITY_{sensitivity}",
        )
        vad = TurnDetector(params, 16_000)
        quiet = to16k(np.clip(line, -32768, 32767))
        assert not any(vad.feed(quiet[i : i + 1280]).started for i in range(0, len(quiet), 1280))
        assert vad.floor_dbfs is not None and abs(vad.floor_dbfs - dbfs) < 4
        spoken = to16k(np.clip(talk, -32768, 32767))
        events = [vad.feed(spoken[i : i + 1280]) for i in range(0, len(spoken), 1280)]
        assert (sum(e.started for e in events), sum(e.ended for e in events)) == (1, 1)
        assert vad.finished is not None
        assert vad.finished.size / 16_000 == pytest.approx(2.9, abs=0.4)  # the utterance only


def test_emulator_bench_streams_the_callers_line_noise() -> None:
    def pcm_of(messages: list[str]) -> bytes:
        blobs = [json.loads(m)["realtime_input"]["audio"]["data"] for m in messages]
        return b"".join(base64.urlsafe_b64decode(b) for b in blobs)

    speech, quiet = audio_messages(20, -45.0)
    assert abs(dbfs_of_pcm(pcm_of(quiet)) - -45.0) < 1.5
    assert dbfs_of_pcm(pcm_of(speech)) > -35.0  # the words stand well above the line
    _, silent = audio_messages(20, None)
    assert set(pcm_of(silent)) == {0}


async def test_stopping_the_recorder_waits_for_the_write_it_interrupted(tmp_path, monkeypatch):
    # stop() cancelled the writer while its thread was still appending the batch it had taken:
    # a reader right after stop found no file (a CI run failed on it, under load).
    from sim.emulator import recorder as recorder_module

    path = tmp_path / "rec.jsonl"
    writing = threading.Event()
    append = recorder_module._append

    def slow_append(where: Path, text: str) -> None:
        writing.set()
        time.sleep(0.3)
        append(where, text)

    monkeypatch.setattr(recorder_module, "_append", slow_append)
    monkeypatch.setattr(recorder_module, "FLUSH_SECS", 0.01)
    recorder = recorder_module.Recorder(path, in_memory=False)
    recorder.start()
    recorder.record("s1", {"setup": {}})
    assert await asyncio.to_thread(writing.wait, 5)  # the writer took the batch and is writing
    await recorder.stop()

    assert [json.loads(line)["session"] for line in path.read_text().splitlines()] == ["s1"]
