"""The Spanish persona's fixed phrases end to end: TwiML ``<Say>``s and an in-call goodbye.

The real server with the shipped ``soporte_es`` persona (its own file, made the default of a
folder of one), the real SDK against the emulator, simulated Twilio callers. Expected: the busy
TwiML a second caller fetches and the apology ``<Say>`` of the admitted caller's TwiML are in
Spanish, with a Twilio voice that speaks Spanish and its ``language``; a server drain's goodbye
reaches the model as the persona's Spanish words, is played, and the call is hung up through
the REST API.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from bot.app_keys import PERSONAS
from sim.caller import CallPlan, place_call
from sim.emulator import EmulatorConfig
from sim.testing import wait_until

pytestmark = pytest.mark.e2e

SHIPPED = Path(__file__).resolve().parent.parent / "config" / "personas" / "soporte_es.yaml"
SPAIN = "+34910000001"  # a number soporte_es answers
TOKEN, SID = "secret", "AC" + "0" * 32


@pytest.fixture
def spanish_only(tmp_path: Path) -> Path:
    """A persona folder holding the shipped Spanish persona alone (as the default)."""
    text = SHIPPED.read_text(encoding="utf-8") + "default: true\n"
    (tmp_path / "soporte_es.yaml").write_text(text, encoding="utf-8")
    return tmp_path


async def test_busy_and_apology_twiml_are_spanish(make_emulator, make_server, spanish_only):
    emu = await make_emulator(EmulatorConfig(voice="tone", tone_secs=1.0))
    server = await make_server(emulator=emu, personas=spanish_only, max_calls=1)
    first = asyncio.create_task(  # up from its webhook to its greeting's end, past the busy one
        place_call(server.url, CallPlan().wait_for_greeting().hangup(), to=SPAIN)
    )
    assert await wait_until(lambda: len(server.calls) == 1, 10.0)
    busy = await place_call(server.url, CallPlan().wait_for_greeting(), to=SPAIN)
    admitted = await asyncio.wait_for(first, 20.0)

    texts = server.app[PERSONAS].current.get("soporte_es").texts
    assert busy.stream_sid == "" and "rejected" in (busy.failure or ""), busy.failure
    assert busy.twiml_say == texts.busy
    assert busy.twiml_say.startswith("Lo sentimos, todas nuestras líneas están ocupadas")
    assert (busy.twiml_say_voice, busy.twiml_say_language) == ("Polly.Lucia-Neural", "es-ES")

    assert admitted.ok, admitted.failure
    assert admitted.twiml_say == texts.apology  # played by Twilio only if the stream fails
    assert admitted.twiml_say.startswith("Lo sentimos, no podemos atender su llamada")
    assert (admitted.twiml_say_voice, admitted.twiml_say_language) == (
        "Polly.Lucia-Neural",
        "es-ES",
    )


async def test_drain_goodbye_reaches_the_model_in_spanish(
    make_emulator, make_server, fake_twilio_rest, spanish_only
):
    emu = await make_emulator(EmulatorConfig(voice="tone", tone_secs=1.0))
    server = await make_server(
        emulator=emu,
        personas=spanish_only,
        twilio_api_base=fake_twilio_rest.url,
        twilio_account_sid=SID,
        twilio_auth_token=TOKEN,
    )
    call = asyncio.create_task(
        place_call(server.url, CallPlan().wait_for_greeting().pause(20), to=SPAIN, auth_token=TOKEN)
    )
    assert await wait_until(lambda: len(server.calls) == 1, 10.0)
    await asyncio.wait_for(server.calls.drain(0.0), 20.0)
    result = await asyncio.wait_for(call, 20.0)

    goodbye = server.app[PERSONAS].current.get("soporte_es").texts.drain_goodbye
    assert goodbye.startswith("Lo siento, tengo que terminar la llamada ahora.")
    sent = "\n".join(
        json.dumps(r["msg"], ensure_ascii=False) for rs in emu.recordings.values() for r in rs
    )
    assert goodbye in sent  # word for word, in the persona's language
    assert "I'm sorry, I have to end the call now" not in sent
    # The goodbye was played, then the bot hung up through the REST API and closed normally.
    assert result.ok, result.failure
    assert "(1000" in result.end_reason, result.end_reason
    hang_ups = [r for r in fake_twilio_rest.requests if r["form"].get("Status") == "completed"]
    assert [r["path"].endswith(f"/Calls/{result.call_sid}.json") for r in hang_ups] == [True]
    assert result.audio_played_secs >= 1.8  # the 1 s greeting and the 1 s goodbye
    assert server.calls.totals["drain_wrapped_up"] == 1
