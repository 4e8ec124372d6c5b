"""The persona's ``texts:`` section: every fixed phrase the bot or its TwiML says, per language.

The busy and apology ``<Say>`` of the TwiML, the maximum-duration warning and goodbye, the idle
re-prompt and goodbye, the drain goodbye and the transfer announcement are said in the
persona's language: unset, each comes from the defaults of that language (``language``'s first
part, e.g. ``es`` for ``es-US``; no ``language``: English). The TwiML ``<Say>`` gets a Twilio
voice that speaks it (``say_voice``, default per locale) and that voice's ``language``.

A persona in a language with no defaults must write the texts it uses (and ``say_voice``): the
load fails and lists them, rather than an English sentence reaching a caller of another
language. ``limits.max_call_warning_text``, ``idle_reprompt_text``, ``idle_goodbye_text`` and
``tools.transfer_call.announcement`` are the same phrases in their older place; setting one
there and here is an error.

Placeholders use the persona templates' syntax (``${seconds}``; ``$$`` is a dollar sign) and
only the ones a text lists (``PLACEHOLDERS``), checked at load. It may import pydantic and its
sibling ``sections``; nothing else of ``pipelines``.
"""

from __future__ import annotations

import re
import string
from typing import Annotated, Any

from pydantic import AfterValidator, Field, ValidationInfo, field_validator

from pipelines.personas.sections import Limits, Tools, _Strict

# The phrases, in the order of the README's table; the transfer announcement is off by default.
PHRASES: tuple[str, ...] = (
    "busy", "apology", "max_call_warning", "max_call_goodbye", "idle_reprompt", "idle_goodbye",
    "drain_goodbye", "transfer_announcement",
)  # fmt: skip
# The placeholders each phrase may use (the others take none).
PLACEHOLDERS: dict[str, tuple[str, ...]] = {
    "max_call_warning": ("seconds", "minutes"),  # time left when the warning is said
    "max_call_goodbye": ("minutes",),  # the call's limit
}
# The older places of some phrases (``limits``, ``tools``).
LEGACY_FIELDS: dict[str, tuple[str, str]] = {
    "max_call_warning": ("limits", "max_call_warning_text"),
    "idle_reprompt": ("limits", "idle_reprompt_text"),
    "idle_goodbye": ("limits", "idle_goodbye_text"),
    "transfer_announcement": ("tools", "transfer_call.announcement"),
}

DEFAULTS: dict[str, dict[str, str]] = {
    "en": {
        "busy": "Sorry, all our lines are busy right now. Please call again in a few minutes.",
        "apology": "Sorry, we are having trouble connecting your call. Please try again later.",
        "max_call_warning": "We're almost out of time for this call, so let's wrap up.",
        "max_call_goodbye": (
            "We have reached the time limit for this call. Thank you for calling, goodbye."
        ),
        "idle_reprompt": "Are you still there?",
        "idle_goodbye": "I haven't heard anything, so I'll end the call now. Goodbye!",
        "drain_goodbye": "I'm sorry, I have to end the call now. Thank you for calling, goodbye.",
    },
    "es": {
        "busy": (
            "Lo sentimos, todas nuestras líneas están ocupadas en este momento. Por favor, "
            "vuelva a llamar en unos minutos."
        ),
        "apology": (
            "Lo sentimos, tenemos problemas para conectar su llamada. Por favor, inténtelo de "
            "nuevo más tarde."
        ),
        "max_call_warning": "Nos queda poco tiempo de llamada, así que vamos terminando.",
        "max_call_goodbye": (
            "Hemos llegado al tiempo máximo de esta llamada. Gracias por llamar, adiós."
        ),
        "idle_reprompt": "¿Sigue ahí?",
        "idle_goodbye": "No le oigo, así que voy a colgar. ¡Adiós!",
        "drain_goodbye": (
            "Lo siento, tengo que terminar la llamada ahora. Gracias por llamar, adiós."
        ),
    },
    "fr": {
        "busy": (
            "Désolé, toutes nos lignes sont occupées pour le moment. Veuillez rappeler dans "
            "quelques minutes."
        ),
        "apology": (
            "Désolé, nous avons des difficultés à connecter votre appel. Veuillez réessayer "
            "plus tard."
        ),
        "max_call_warning": "Nous arrivons à la fin du temps d'appel, il va falloir conclure.",
        "max_call_goodbye": (
            "Nous avons atteint la durée maximale de cet appel. Merci de votre appel, au revoir."
        ),
        "idle_reprompt": "Êtes-vous toujours là ?",
        "idle_goodbye": "Je n'entends plus rien, je vais donc raccrocher. Au revoir !",
        "drain_goodbye": (
            "Je suis désolé, je dois mettre fin à l'appel maintenant. Merci de votre appel, "
            "au revoir."
        ),
    },
    "de": {
        "busy": (
            "Leider sind im Moment alle Leitungen besetzt. Bitte rufen Sie in ein paar Minuten "
            "wieder an."
        ),
        "apology": (
            "Leider gibt es Probleme beim Verbinden Ihres Anrufs. Bitte versuchen Sie es später "
            "noch einmal."
        ),
        "max_call_warning": "Unsere Gesprächszeit ist fast um, lassen Sie uns zum Ende kommen.",
        "max_call_goodbye": (
            "Wir haben die maximale Gesprächsdauer erreicht. Vielen Dank für Ihren Anruf, auf "
            "Wiederhören."
        ),
        "idle_reprompt": "Sind Sie noch da?",
        "idle_goodbye": (
            "Ich höre nichts mehr, deshalb beende ich jetzt den Anruf. Auf Wiederhören!"
        ),
        "drain_goodbye": (
            "Es tut mir leid, ich muss das Gespräch jetzt beenden. Vielen Dank für Ihren Anruf, "
            "auf Wiederhören."
        ),
    },
    "pt": {  # Brazilian Portuguese; a pt-PT persona may prefer its own words
        "busy": (
            "Desculpe, todas as nossas linhas estão ocupadas no momento. Por favor, ligue "
            "novamente em alguns minutos."
        ),
        "apology": (
            "Desculpe, estamos com problemas para conectar a sua chamada. Por favor, tente "
            "novamente mais tarde."
        ),
        "max_call_warning": "O tempo desta chamada está quase no fim, vamos encerrar.",
        "max_call_goodbye": "Atingimos o tempo máximo desta chamada. Obrigado por ligar, até logo.",
        "idle_reprompt": "Você ainda está aí?",
        "idle_goodbye": "Não estou ouvindo nada, então vou encerrar a chamada. Até logo!",
        "drain_goodbye": (
            "Desculpe, preciso encerrar a chamada agora. Obrigado por ligar, até logo."
        ),
    },
}
# Twilio <Say> voices (Amazon Polly neural) by locale, and each language's default locale.
SAY_VOICES: dict[str, str] = {
    "en-US": "Polly.Joanna-Neural", "en-GB": "Polly.Amy-Neural", "en-AU": "Polly.Olivia-Neural",
    "en-IN": "Polly.Kajal-Neural", "es-ES": "Polly.Lucia-Neural", "es-US": "Polly.Lupe-Neural",
    "es-MX": "Polly.Mia-Neural", "fr-FR": "Polly.Lea-Neural", "fr-CA": "Polly.Gabrielle-Neural",
    "de-DE": "Polly.Vicki-Neural", "de-AT": "Polly.Hannah-Neural",
    "pt-BR": "Polly.Camila-Neural", "pt-PT": "Polly.Ines-Neural",
}  # fmt: skip
# The languages of the shipped watchdog clips (pipelines/call/clips/{hold,apology}_<lang>.wav).
SHIPPED_CLIP_LANGUAGES = ("en", "es")
DEFAULT_LOCALES: dict[str, str] = {
    "en": "en-US", "es": "es-US", "fr": "fr-FR", "de": "de-DE", "pt": "pt-BR",
}  # fmt: skip
# Voices whose locale cannot be read from the name: ``man``/``woman`` take the persona's.
_VOICE = re.compile(
    r"man|woman|Polly\.[A-Z][A-Za-z]+(-Neural|-Generative|-LongForm)?"
    r"|Google\.[a-z]{2,3}-[A-Z]{2}-[A-Za-z0-9]+(-[A-Za-z0-9]+)*",
    re.ASCII,
)
_LOCALE = re.compile(r"[a-z]{2,3}-[A-Z]{2}", re.ASCII)


class _Template(string.Template):
    idpattern = r"(?a:[_a-z][_a-z0-9]*)"


def _check_placeholders(name: str, text: str) -> None:
    allowed = PLACEHOLDERS.get(name, ())
    template = _Template(text)
    expected = ", ".join(f"${{{p}}}" for p in allowed) or "no placeholders"
    if not template.is_valid():
        raise ValueError(f"got {text!r}, expected {expected} (write $$ for a dollar sign)")
    unknown = [p for p in template.get_identifiers() if p not in allowed]
    if unknown:
        raise ValueError(
            f"got placeholder ${{{unknown[0]}}} in {text!r}, expected {expected}"
            + ("" if allowed else " in this text (write $$ for a dollar sign)")
        )


def voice_locale(voice: str) -> str | None:
    """The locale a Twilio voice speaks, when its name or ``SAY_VOICES`` tells it."""
    if voice.startswith("Google."):
        return voice.removeprefix("Google.")[:5]
    return next((loc for loc, v in SAY_VOICES.items() if v == voice), None)


class Texts(_Strict):
    """Words the caller hears that no model composes, and the TwiML ``<Say>`` voice.

    After loading, every phrase is filled in (``transfer_announcement`` stays ``None``: no
    ``<Say>`` before the ``<Dial>``), as are ``say_voice`` and ``say_language``.

    Attributes:
        busy: The TwiML ``<Say>`` when a caller cannot be taken (lines busy, draining, quota).
        apology: The TwiML ``<Say>`` after the stream when a call fails.
        max_call_warning: Said before the maximum duration (``${seconds}``, ``${minutes}``
            left).
        max_call_goodbye: Said at the maximum duration, then the bot hangs up (``${minutes}``).
        idle_reprompt: Said to a caller who has been silent (``limits.idle_timeout_secs``).
        idle_goodbye: Said when the re-prompts have run out, then the bot hangs up.
        drain_goodbye: Said to each call still up when a server drain ends.
        transfer_announcement: The ``<Say>`` before ``transfer_call``'s ``<Dial>``.
        say_voice: The Twilio voice of the ``<Say>``s (``Polly.…``, ``Google.…``, ``man``,
            ``woman``).
        say_language: The ``<Say>``'s ``language`` (default: the voice's locale).
    """

    busy: str | None = None
    apology: str | None = None
    max_call_warning: str | None = None
    max_call_goodbye: str | None = None
    idle_reprompt: str | None = None
    idle_goodbye: str | None = None
    drain_goodbye: str | None = None
    transfer_announcement: str | None = None
    say_voice: str | None = None
    say_language: str | None = None

    @field_validator(*PHRASES)
    @classmethod
    def _phrase(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if not value.strip():
            raise ValueError("got an empty text, expected the words to say (or remove the key)")
        _check_placeholders(str(info.field_name), value)
        return value

    @field_validator("say_voice")
    @classmethod
    def _voice(cls, value: str | None) -> str | None:
        if value is not None and not _VOICE.fullmatch(value):
            raise ValueError(
                f"got {value!r}, expected a Twilio <Say> voice such as 'Polly.Lucia-Neural', "
                "'Google.es-ES-Standard-A', 'man' or 'woman'"
            )
        return value

    @field_validator("say_language")
    @classmethod
    def _say_language(cls, value: str | None) -> str | None:
        if value is not None and not _LOCALE.fullmatch(value):
            raise ValueError(f"got {value!r}, expected a locale like 'es-ES' or 'en-US'")
        return value

    def said(self, phrase: str, **values: float) -> str:
        """The words of ``phrase`` with its placeholders filled (``seconds``/``minutes``)."""
        text = getattr(self, phrase)
        if text is None:
            raise ValueError(f"texts.{phrase} is not set")
        if "seconds" in values:
            values.setdefault("minutes", max(1, round(values["seconds"] / 60)))
        return _Template(text).safe_substitute({k: f"{v:g}" for k, v in values.items()})


def _needed(limits: Limits) -> list[str]:
    """The phrases a persona with these limits can say (the others are never used)."""
    needed = ["busy", "apology", "drain_goodbye"]
    if limits.max_call_secs:
        needed += ["max_call_warning"] if limits.max_call_warning_secs else []
        needed.append("max_call_goodbye")
    if limits.idle_timeout_secs:
        needed += ["idle_reprompt"] if limits.idle_max_reprompts else []
        needed.append("idle_goodbye")
    return needed


def _legacy_value(phrase: str, limits: Limits, tools: Tools) -> str | None:
    if phrase == "transfer_announcement":
        return tools.transfer_call.announcement if tools.transfer_call else None
    where = LEGACY_FIELDS.get(phrase)
    return getattr(limits, where[1]) if where else None


def base_language(tag: str | None) -> str:
    """The language of a BCP-47 tag without its region (``es-US`` -> ``es``); None: English."""
    return (tag or "en").split("-")[0]


def resolve(texts: Texts, info: ValidationInfo) -> Texts:
    """Fill every phrase and the ``<Say>`` voice from the persona's language (``Persona``)."""
    data: dict[str, Any] = info.data
    if not {"language", "limits", "tools"} <= data.keys():
        return texts  # an earlier field failed; its error is reported, this one would be noise
    language: str | None = data["language"]
    limits: Limits = data["limits"]
    tools: Tools = data["tools"]
    base = base_language(language)
    defaults = DEFAULTS.get(base)
    values: dict[str, Any] = {}
    for phrase in PHRASES:
        own, legacy = getattr(texts, phrase), _legacy_value(phrase, limits, tools)
        if own is not None and legacy is not None and own != legacy:
            section, key = LEGACY_FIELDS[phrase]
            raise ValueError(
                f"got both {section}.{key} and texts.{phrase}, expected one of them "
                f"(texts.{phrase}; remove {section}.{key})"
            )
        values[phrase] = own if own is not None else legacy
    locale = language if language and "-" in language else DEFAULT_LOCALES.get(base)
    if texts.say_language and base_language(texts.say_language) != base:
        raise ValueError(
            f"say_language: got {texts.say_language!r}, expected a locale of the persona's "
            f"language {language or 'en'!r}, e.g. {locale or 'en-US'!r}"
        )
    locale = texts.say_language or locale
    voice = texts.say_voice or (SAY_VOICES.get(locale or "") or SAY_VOICES.get(
        DEFAULT_LOCALES.get(base, "")
    ))  # fmt: skip
    if defaults is None:
        missing = [f"texts.{p}" for p in _needed(limits) if values[p] is None]
        missing += [] if voice else ["texts.say_voice"]
        if missing:
            known = ", ".join(sorted(DEFAULTS))
            raise ValueError(
                f"language {language!r} has no default texts (defaults exist for {known}), "
                f"expected {', '.join(missing)} written in that language, so no caller hears "
                "English; say_voice is a Twilio <Say> voice that speaks it, e.g. "
                f"'Google.{language}-Standard-A'"
            )
        defaults = DEFAULTS["en"]  # only for phrases this persona never says
    for phrase in PHRASES:
        if values[phrase] is None and phrase in defaults:
            values[phrase] = defaults[phrase]
    assert voice is not None
    spoken = voice_locale(voice)
    if spoken and base_language(spoken) != base:
        suggestion = SAY_VOICES.get(locale or "") or "a voice of that language"
        raise ValueError(
            f"say_voice: got {voice!r}, which speaks {spoken}, expected a voice that speaks "
            f"{base!r} (the persona's language {language or 'en'!r}), e.g. {suggestion!r}"
        )
    if texts.say_language and spoken and texts.say_language != spoken:
        raise ValueError(
            f"say_language: got {texts.say_language!r} with say_voice {voice!r}, which speaks "
            f"{spoken}; expected {spoken!r} (or remove say_language: it follows the voice)"
        )
    values["say_voice"] = voice
    values["say_language"] = texts.say_language or spoken or locale or "en-US"
    return texts.model_copy(update=values)


# The ``Persona.texts`` field: validated even when absent, so defaults follow the language.
PersonaTexts = Annotated[Texts, AfterValidator(resolve)]
TEXTS_FIELD: Any = Field(default_factory=Texts, validate_default=True)
