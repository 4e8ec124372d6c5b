"""Keys pressed on a call, end to end: the batched entry reaches the model; a mapped key acts.

The simulated caller presses keys as Twilio sends them (one ``dtmf`` message per key); the real
server batches them (``pipelines.call.dtmf``) and the real google-genai SDK sends the entry to
the Live API emulator, whose record shows what the model received.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from loguru import logger

from sim.caller import CallPlan, place_call
from sim.emulator import EmulatorConfig, FaultPlan
from sim.testing import wait_until

pytestmark = pytest.mark.e2e

# Timers (the inter-digit timeout among them) run at a tenth: 2 s -> 0.2 s. Audio is real time.
SCALE = 0.1
AUTH = "secret"
ACCOUNT = "AC" + "0" * 32

# The caller speaks first (no greeting to sit through); replies are a 0.5 s tone.
PERSONAS = {
    "keys.yaml": """
model: gemini-3.8-live
voice: Charon
default: true
system_instruction: "Ask the caller for their 4-digit PIN, then press pound."
greeting: {mode: wait}
barge_in: {local_vad: true, greeting_grace_ms: 0}
dtmf:
  template: "Keys: ${keys}"
  keys:
    "0": {action: transfer, to: "+15551239999", say: "Connecting you to a person."}
""",
}


def _personas(tmp_path: Path) -> Path:
    for name, text in PERSONAS.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


async def test_keys_reach_the_model_as_one_entry_and_it_answers(
    tmp_path: Path, make_emulator, make_server
) -> None:
    emu = await make_emulator(EmulatorConfig(think_ms=200, voice="tone", tone_secs=0.5))
    server = await make_server(emulator=emu, personas=_personas(tmp_path), time_scale=SCALE)
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="DEBUG")
    try:
        plan = (
            CallPlan()
            .pause(0.5)
            .dtmf("1234#", gap_secs=0.15)  # the terminator ends the entry
            .pause(1.2)  # the reply: 0.2 s thinking, 0.5 s of tone
            .dtmf("42", gap_secs=0.15)  # no terminator: the (scaled) inter-digit timeout does
            .pause(1.5)
            .hangup()
        )
        result = await place_call(server.url, plan)
    finally:
        logger.remove(sink)

    assert result.ok, result.failure
    assert emu.recorder.caller_texts() == ["Keys: 1 2 3 4 #", "Keys: 4 2"]
    # The model answered each entry like a caller turn: two replies were played.
    assert result.audio_played_secs >= 0.9, result.audio_played_secs
    assert result.replies_missed == 0
    assert emu.sessions_total == 1
    # The keys are personal data (a PIN): no log line of the server (or emulator) holds them.
    assert not [ln for ln in lines if "1 2 3 4" in ln or "1234" in ln or "Keys: 4" in ln]
    assert await wait_until(lambda: len(server.calls) == 0, 2.0)


async def test_a_mapped_key_transfers_the_call_without_the_model(
    tmp_path: Path, make_emulator, make_server, fake_twilio_rest
) -> None:
    emu = await make_emulator(EmulatorConfig(think_ms=200, voice="tone", tone_secs=0.5))
    server = await make_server(
        emulator=emu,
        personas=_personas(tmp_path),
        time_scale=SCALE,
        twilio_api_base=fake_twilio_rest.url,
        twilio_account_sid=ACCOUNT,
        twilio_auth_token=AUTH,
    )
    plan = CallPlan().pause(0.5).dtmf("0").pause(1.0).hangup()
    result = await place_call(server.url, plan, auth_token=AUTH)

    assert result.ok, result.failure
    redirects = [r for r in fake_twilio_rest.requests if "Twiml" in r["form"]]
    assert len(redirects) == 1, fake_twilio_rest.requests
    assert redirects[0]["path"].endswith(f"/Calls/{result.call_sid}.json")
    twiml = redirects[0]["form"]["Twiml"]
    assert "<Say" in twiml and ">Connecting you to a person.</Say>" in twiml
    assert "<Dial>+15551239999</Dial>" in twiml
    # Without the model: it received no entry, was asked nothing and called no tool.
    assert emu.recorder.caller_texts() == []
    messages = [r["msg"] for rs in emu.recordings.values() for r in rs]
    assert not [m for m in messages if "client_content" in m or "tool_response" in m]
    assert not [r for r in fake_twilio_rest.requests if r["form"].get("Status") == "completed"]


async def test_an_entry_the_dropped_connection_did_not_answer_is_re_sent(
    tmp_path: Path, make_emulator, make_server
) -> None:
    # The first connection drops (1011) after the entry reached it and before the model
    # answered (it thinks 1.5 s); the next connection gets the entry again and answers it.
    emu = await make_emulator(
        EmulatorConfig(think_ms=1500, voice="tone", tone_secs=0.5),
        FaultPlan(close_after=1.2, close_sessions="1"),
    )
    server = await make_server(emulator=emu, personas=_personas(tmp_path))
    plan = CallPlan().pause(0.3).dtmf("7#", gap_secs=0.1).pause(3.5).hangup()
    result = await place_call(server.url, plan)

    assert result.ok, result.failure
    assert emu.sessions_total == 2
    first, second = (emu.recorder.caller_texts(sid) for sid in emu.recordings)
    assert second == ["Keys: 7 #"]  # once: re-sent (or kept while offline), never lost
    assert first in ([], ["Keys: 7 #"])
    assert result.audio_played_secs >= 0.4, result.audio_played_secs  # the reply was heard
