"""Persona texts (`pipelines/personas/texts.py`): defaults per language, errors, placeholders.

Also the TwiML and call-control uses of them: the busy and apology ``<Say>`` in the persona's
language and voice, the transfer announcement, the drain and limit phrases.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pipecat.frames.frames import BotStartedSpeakingFrame, BotStoppedSpeakingFrame

from bot.twilio_routes import BUSY, busy_twiml, stream_twiml
from pipelines.call.control import WRAP_UP_GOODBYE, CallControl, dial_twiml, wrap_up_instruction
from pipelines.personas import PersonaConfigError, load_personas
from pipelines.personas.texts import DEFAULTS, PHRASES
from sim.caller import parse_twiml

pytestmark = pytest.mark.unit

BASE = """\
model: gemini-3.8-live
voice: Charon
default: true
numbers: ["+15550001111"]
system_instruction: Be brief.
"""
SHIPPED = Path(__file__).resolve().parent.parent / "config" / "personas"


def load(tmp_path: Path, extra: str = "") -> Any:
    (tmp_path / "bot.yaml").write_text(BASE + extra, encoding="utf-8")
    return load_personas(tmp_path)


def errors_for(tmp_path: Path, extra: str) -> list[str]:
    (tmp_path / "bot.yaml").write_text(BASE + extra, encoding="utf-8")
    with pytest.raises(PersonaConfigError) as info:
        load_personas(tmp_path)
    return [e.replace(f"{tmp_path}/", "") for e in info.value.errors]


@pytest.mark.parametrize(
    ("language", "word", "voice", "say_language"),
    [
        (None, "busy", "Polly.Joanna-Neural", "en-US"),
        ("en-GB", "busy", "Polly.Amy-Neural", "en-GB"),
        ("es-ES", "ocupadas", "Polly.Lucia-Neural", "es-ES"),
        ("es-US", "ocupadas", "Polly.Lupe-Neural", "es-US"),
        ("es-AR", "ocupadas", "Polly.Lupe-Neural", "es-US"),  # no voice of its own: es-US
        ("fr-FR", "occupées", "Polly.Lea-Neural", "fr-FR"),
        ("de-DE", "besetzt", "Polly.Vicki-Neural", "de-DE"),
        ("pt-BR", "ocupadas", "Polly.Camila-Neural", "pt-BR"),
    ],
)
def test_defaults_follow_the_language(
    tmp_path: Path, language: str | None, word: str, voice: str, say_language: str
) -> None:
    extra = f"language: {language}\n" if language else ""
    texts = load(tmp_path, extra).default.texts
    assert word in texts.busy
    assert (texts.say_voice, texts.say_language) == (voice, say_language)
    base = (language or "en").split("-")[0]
    for phrase in PHRASES[:-1]:  # every phrase but the (optional) transfer announcement
        assert getattr(texts, phrase) == DEFAULTS[base][phrase], phrase
    assert texts.transfer_announcement is None


def test_every_language_has_every_phrase() -> None:
    for language, phrases in DEFAULTS.items():
        assert set(phrases) == set(PHRASES) - {"transfer_announcement"}, language


def test_shipped_spanish_persona_speaks_spanish() -> None:
    texts = load_personas(SHIPPED).get("soporte_es").texts
    assert texts.busy.startswith("Lo sentimos, todas nuestras líneas están ocupadas")
    assert texts.drain_goodbye.startswith("Lo siento, tengo que terminar la llamada")
    assert texts.transfer_announcement == "Le paso con un compañero. Un momento, por favor."
    assert (texts.say_voice, texts.say_language) == ("Polly.Lucia-Neural", "es-ES")


def test_a_language_without_defaults_must_write_its_texts(tmp_path: Path) -> None:
    errors = errors_for(tmp_path, "language: it-IT\nlimits: {idle_timeout_secs: 10}\n")
    assert errors == [
        "bot.yaml:1: texts: language 'it-IT' has no default texts (defaults exist for de, en, "
        "es, fr, pt), expected texts.busy, texts.apology, texts.drain_goodbye, "
        "texts.idle_reprompt, texts.idle_goodbye, texts.say_voice written in that language, "
        "so no caller hears English; say_voice is a Twilio <Say> voice that speaks it, e.g. "
        "'Google.it-IT-Standard-A'"
    ]


def test_a_language_without_defaults_loads_with_its_texts(tmp_path: Path) -> None:
    extra = (
        "language: it-IT\ntexts:\n"
        "  busy: Tutte le linee sono occupate.\n"
        "  apology: Ci scusiamo, abbiamo un problema.\n"
        "  drain_goodbye: Devo chiudere la chiamata, arrivederci.\n"
        "  say_voice: Google.it-IT-Standard-A\n"
    )
    personas = load(tmp_path, extra)
    texts = personas.default.texts
    assert texts.say_language == "it-IT"
    assert "it-IT" in busy_twiml(texts) and "Tutte le linee" in busy_twiml(texts)
    # No shipped clips in Italian: a warning asks for recordings (the English ones would play).
    assert any("watchdog: got no holding_clip or apology_clip" in w for w in personas.warnings)


def test_placeholders_are_checked_at_load(tmp_path: Path) -> None:
    errors = errors_for(tmp_path, "texts:\n  busy: Call back in ${minutes} minutes.\n")
    assert errors == [
        "bot.yaml:7: texts.busy: got placeholder ${minutes} in 'Call back in ${minutes} "
        "minutes.', expected no placeholders in this text (write $$ for a dollar sign)"
    ]
    errors = errors_for(tmp_path, "texts:\n  max_call_warning: ${secs} left.\n")
    assert errors == [
        "bot.yaml:7: texts.max_call_warning: got placeholder ${secs} in '${secs} left.', "
        "expected ${seconds}, ${minutes}"
    ]
    errors = errors_for(tmp_path, "texts:\n  apology: It costs $ 5.\n")
    assert errors == [
        "bot.yaml:7: texts.apology: got 'It costs $ 5.', expected no placeholders "
        "(write $$ for a dollar sign)"
    ]
    errors = errors_for(tmp_path, "texts:\n  idle_reprompt: '  '\n")
    assert errors == [
        "bot.yaml:7: texts.idle_reprompt: got an empty text, expected the words to say "
        "(or remove the key)"
    ]


def test_placeholders_are_filled_when_said(tmp_path: Path) -> None:
    extra = (
        "limits: {max_call_secs: 600, max_call_warning_secs: 120}\ntexts:\n"
        "  max_call_warning: About ${minutes} minutes (${seconds} s) left, $$0 extra.\n"
        "  max_call_goodbye: That was ${minutes} minutes. Bye.\n"
    )
    texts = load(tmp_path, extra).default.texts
    assert texts.said("max_call_warning", seconds=120) == "About 2 minutes (120 s) left, $0 extra."
    assert texts.said("max_call_goodbye", seconds=600) == "That was 10 minutes. Bye."


def test_older_places_count_and_may_not_disagree(tmp_path: Path) -> None:
    extra = "language: es-ES\nlimits: {idle_timeout_secs: 5, idle_reprompt_text: '¿Hola?'}\n"
    texts = load(tmp_path, extra).default.texts
    assert texts.idle_reprompt == "¿Hola?"
    assert texts.idle_goodbye == DEFAULTS["es"]["idle_goodbye"]
    errors = errors_for(tmp_path, extra + "texts: {idle_reprompt: '¿Sigue ahí?'}\n")
    assert errors == [
        "bot.yaml:8: texts: got both limits.idle_reprompt_text and texts.idle_reprompt, "
        "expected one of them (texts.idle_reprompt; remove limits.idle_reprompt_text)"
    ]


def test_say_voice_must_speak_the_language(tmp_path: Path) -> None:
    errors = errors_for(tmp_path, "language: es-ES\ntexts: {say_voice: Polly.Joanna-Neural}\n")
    assert errors == [
        "bot.yaml:7: texts: say_voice: got 'Polly.Joanna-Neural', which speaks en-US, expected "
        "a voice that speaks 'es' (the persona's language 'es-ES'), e.g. 'Polly.Lucia-Neural'"
    ]
    errors = errors_for(tmp_path, "texts: {say_voice: Joanna}\n")
    assert errors == [
        "bot.yaml:6: texts.say_voice: got 'Joanna', expected a Twilio <Say> voice such as "
        "'Polly.Lucia-Neural', 'Google.es-ES-Standard-A', 'man' or 'woman'"
    ]
    texts = load(tmp_path, "language: es-MX\ntexts: {say_voice: Google.es-US-Neural2-A}\n")
    assert (texts.default.texts.say_voice, texts.default.texts.say_language) == (
        "Google.es-US-Neural2-A",
        "es-US",
    )


def test_say_language_picks_the_voice_and_must_be_the_persona_language(tmp_path: Path) -> None:
    texts = load(tmp_path, "language: es-ES\ntexts: {say_language: es-MX}\n").default.texts
    assert (texts.say_voice, texts.say_language) == ("Polly.Mia-Neural", "es-MX")
    errors = errors_for(tmp_path, "language: es-ES\ntexts: {say_language: en-US}\n")
    assert errors == [
        "bot.yaml:7: texts: say_language: got 'en-US', expected a locale of the persona's "
        "language 'es-ES', e.g. 'es-ES'"
    ]
    extra = "language: es-ES\ntexts: {say_language: es-ES, say_voice: Polly.Lupe-Neural}\n"
    assert errors_for(tmp_path, extra) == [
        "bot.yaml:7: texts: say_language: got 'es-ES' with say_voice 'Polly.Lupe-Neural', which "
        "speaks es-US; expected 'es-US' (or remove say_language: it follows the voice)"
    ]


def test_twiml_says_the_persona_texts_in_its_voice() -> None:
    texts = load_personas(SHIPPED).get("soporte_es").texts
    busy = parse_twiml(busy_twiml(texts))
    assert (busy.say_only, busy.say_voice, busy.say_language) == (
        texts.busy,
        "Polly.Lucia-Neural",
        "es-ES",
    )
    stream = parse_twiml(stream_twiml("wss://bot.example.com/twilio/media", {}, texts))
    assert (stream.say_after, stream.say_voice, stream.say_language) == (
        texts.apology,
        "Polly.Lucia-Neural",
        "es-ES",
    )
    dial = dial_twiml("+34910000099", texts.transfer_announcement, texts)
    assert '<Say language="es-ES" voice="Polly.Lucia-Neural">Le paso' in dial
    assert "<Dial>+34910000099</Dial>" in dial
    assert parse_twiml(busy_twiml()).say_only == BUSY  # no persona: the English default


async def test_in_call_phrases_are_the_persona_texts() -> None:
    persona = load_personas(SHIPPED).get("soporte_es")
    said: list[str] = []

    async def instruct(text: str) -> bool:
        said.append(text)
        return True

    async def ignore(*_args: object) -> None:
        return None

    control = CallControl(
        persona, instruct=instruct, hang_up=ignore, redirect=None, wait_played=ignore
    )
    control.observe(BotStartedSpeakingFrame())  # the greeting, played
    control.observe(BotStoppedSpeakingFrame())
    assert await asyncio.wait_for(control.wrap_up("server shutting down"), 5.0)
    assert said == [wrap_up_instruction(persona.texts.drain_goodbye)]
    assert "Lo siento, tengo que terminar la llamada ahora." in said[0]
    assert said[0] != WRAP_UP_GOODBYE  # the English default is not what a Spanish caller hears
    await control.stop()
