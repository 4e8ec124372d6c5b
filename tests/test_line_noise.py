"""Line noise and echo: levels, colours, what the caller sends, and what it costs."""

from __future__ import annotations

import audioop
import base64
import json

import numpy as np
import pytest

from sim.caller.core import CallerCore
from sim.caller.line_noise import (
    DEFAULT_LINE_NOISE_DBFS,
    LineNoise,
    dbfs_of_pcm,
    noise_bank,
    parse_dbfs,
    speech_mix,
)
from sim.caller.plan import FRAME_BYTES, CallPlan, Utterance

pytestmark = pytest.mark.unit

LOUD = bytes([0x00, 0x80]) * (FRAME_BYTES // 2)


def bank_pcm(dbfs: float, color: str) -> bytes:
    return audioop.ulaw2lin(b"".join(noise_bank(dbfs, color).raw), 2)


@pytest.mark.parametrize("color", ["white", "pink"])
@pytest.mark.parametrize("dbfs", [-30.0, -45.0, -60.0])
def test_noise_rms_is_the_requested_level(dbfs: float, color: str) -> None:
    pcm = bank_pcm(dbfs, color)
    assert len(pcm) >= 2 * 8000 * 5  # several seconds to loop over
    assert dbfs_of_pcm(pcm) == pytest.approx(dbfs, abs=1.5)
    # and per 20 ms frame, as a VAD sees it: level steady, no silent frames
    frames = [dbfs_of_pcm(pcm[i : i + 320]) for i in range(0, len(pcm), 320)]
    assert np.median(frames) == pytest.approx(dbfs, abs=2.0)
    assert min(frames) > dbfs - 12


def band_power(pcm: bytes, lo: float, hi: float) -> float:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(x.size, 1 / 8000)
    sel = (f >= lo) & (f < hi)
    return float(spec[sel].mean())  # power per Hz


def test_pink_tilts_down_with_frequency_and_white_is_flat() -> None:
    white, pink = bank_pcm(-40.0, "white"), bank_pcm(-40.0, "pink")
    # power density at 200-400 Hz against 1600-3200 Hz: 3 octaves apart
    white_tilt = 10 * np.log10(band_power(white, 200, 400) / band_power(white, 1600, 3200))
    pink_tilt = 10 * np.log10(band_power(pink, 200, 400) / band_power(pink, 1600, 3200))
    assert abs(white_tilt) < 1.5
    assert pink_tilt == pytest.approx(10 * np.log10(8), abs=1.5)  # 1/f: 9 dB over 3 octaves
    # band-limited like a phone line: almost nothing below 100 Hz
    assert band_power(pink, 20, 80) < band_power(pink, 200, 400) / 10


def test_bank_loops_without_a_seam() -> None:
    pcm = np.frombuffer(bank_pcm(-40.0, "pink"), dtype="<i2").astype(np.float64)
    steps = np.abs(np.diff(pcm))
    wrap = abs(pcm[0] - pcm[-1])
    assert wrap < np.percentile(steps, 99.9)


def test_parse_dbfs_and_validation() -> None:
    assert parse_dbfs("off") is None and parse_dbfs("-45") == -45.0
    assert parse_dbfs("-50 dBFS") == -50.0 and parse_dbfs(None) is None
    with pytest.raises(ValueError, match="expected dBFS such as -45, or 'off'"):
        parse_dbfs("loud")
    with pytest.raises(ValueError, match="expected -120 to -3 dBFS"):
        LineNoise(dbfs=10.0)
    with pytest.raises(ValueError, match="expected one of white, pink"):
        LineNoise(color="blue")  # type: ignore[arg-type]
    assert LineNoise().dbfs == DEFAULT_LINE_NOISE_DBFS
    assert LineNoise(dbfs=None).describe() == "digital silence, no echo"
    assert LineNoise(-45, "pink", 30).describe() == "pink noise -45 dBFS, echo -30 dB after 40 ms"


def sent_payloads(core: CallerCore, ticks: int, t: float = 0.0) -> list[bytes]:
    out = []
    for i in range(1, ticks + 1):
        m = json.loads(core.on_tick(t + 0.02 * i)[-1])
        out.append(base64.b64decode(m["media"]["payload"]))
    return out


def core_on(plan: CallPlan) -> CallerCore:
    core = CallerCore(plan, t0=0.0, call_sid="CA1", account_sid="AC1", stream_sid="MZ1")
    core.open(0.0)
    return core


def test_caller_sends_noise_between_and_under_speech() -> None:
    speech = Utterance.from_ulaw(bytes([0xFF]) * FRAME_BYTES * 5, "quiet-speech")
    plan = CallPlan(line_noise=LineNoise(-45.0, "pink")).pause(0.1).say(speech).pause(1)
    core = core_on(plan)
    frames = sent_payloads(core, 20)
    levels = [dbfs_of_pcm(audioop.ulaw2lin(f, 2)) for f in frames]
    assert all(-60 < lv < -35 for lv in levels)  # never digital silence, speech or not
    assert core.res.line["dbfs"] == -45.0 and core.res.line["color"] == "pink"
    assert core.res.line["playout_delay_ms"] == pytest.approx(60.0)
    assert any(e.kind == "line" and "pink noise -45 dBFS" in e.detail for e in core.res.events)
    # speech + noise mixes are built once per (utterance, level, colour)
    assert speech_mix(speech, -45.0, "pink") is speech_mix(speech, -45.0, "pink")


def test_calls_start_at_different_points_of_the_noise_bank() -> None:
    plan = CallPlan(line_noise=LineNoise(-45.0, "white")).pause(1)
    firsts = {sent_payloads(core_on(plan), 1)[0] for _ in range(8)}
    assert len(firsts) > 1


def test_off_sends_digital_silence() -> None:
    core = core_on(CallPlan(line_noise=LineNoise(dbfs=None)).pause(1))
    assert set(sent_payloads(core, 5)) == {bytes([0xFF]) * FRAME_BYTES}


def test_echo_of_the_bot_leaks_back_attenuated_and_delayed() -> None:
    line = LineNoise(dbfs=None, echo_db=30.0, echo_delay_ms=40.0)
    core = core_on(CallPlan(line_noise=line, playout_delay_secs=0.0).pause(2))
    payload = base64.b64encode(LOUD).decode()
    msg = json.dumps({"event": "media", "streamSid": "MZ1", "media": {"payload": payload}})
    for _ in range(10):  # 200 ms of loud bot audio at t=0, heard 0-0.2 s
        core.on_message(msg, 0.0)
    frames = sent_payloads(core, 20)  # frame k is sent at t = 0.02 * (k + 1)
    levels = [dbfs_of_pcm(audioop.ulaw2lin(f, 2)) for f in frames]
    bot = dbfs_of_pcm(audioop.ulaw2lin(LOUD, 2))
    # the frame sent at t carries what played over [t - 60 ms, t - 40 ms)
    assert levels[1] == -np.inf  # t=0.04: [-0.02, 0.00): nothing played yet
    assert levels[2] == pytest.approx(bot - 30, abs=1.0)  # t=0.06: [0.00, 0.02)
    assert levels[11] == pytest.approx(bot - 30, abs=1.0)  # t=0.24: [0.18, 0.20)
    assert levels[12] == -np.inf  # t=0.26: [0.20, 0.22): the bot had stopped


def test_noise_costs_the_generator_no_per_frame_encoding() -> None:
    """Between words a call sends payloads precomputed in the shared noise bank, by reference.

    (The per-frame cost itself is a figure, not a test: 1.42 us per frame with noise off and
    1.47 us with it on, for 200 calls' worth of ``on_tick``; see the closing note of issue 10.)
    """
    bank = noise_bank(-45.0, "pink")
    assert noise_bank(-45.0, "pink") is bank  # built once per process, shared by every call
    core = core_on(CallPlan(line_noise=LineNoise(-45.0, "pink")).pause(60))
    sent = [core.on_tick(0.02 * i)[-1] for i in range(1, 51)]
    payloads = [json.loads(m)["media"]["payload"] for m in sent]
    assert set(payloads) <= set(bank.payloads)  # every frame is a frame of the bank
    assert len(set(payloads)) > 1  # and the call walks through it
