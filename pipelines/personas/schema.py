"""The persona schema: one YAML file in ``config/personas/`` is one ``Persona``.

Field validators raise ``ValueError("got …, expected …")`` so the loader can prefix file, line
and field. Checks that need the model capability table live in ``checks``; the mapping onto
the Live API lives in ``setup`` (``connect_config`` below delegates to it).
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    Field,
    field_validator,
    model_validator,
)

from pipelines import gemini_models
from pipelines.personas import setup as persona_setup
from pipelines.personas.dtmf import Dtmf
from pipelines.personas.outbound import Outbound
from pipelines.personas.quoting import template_values
from pipelines.personas.sections import (
    BargeIn,
    Greeting,
    Limits,
    PostCallWebhook,
    Records,
    Session,
    Tools,
    Watchdog,
    _e164,
    _Strict,
)
from pipelines.personas.texts import TEXTS_FIELD, PersonaTexts
from pipelines.personas.tools import HttpTools, with_tool_notes

if TYPE_CHECKING:
    from google.genai.types import LiveConnectConfig

BUILTIN_VARIABLES: tuple[str, ...] = (
    "caller", "called", "local_time", "local_date", "weekday", "timezone", "persona",
)  # fmt: skip
# The holding and apology clips shipped with the package (``Watchdog``).
SHIPPED_CLIPS = Path(__file__).resolve().parent.parent / "call" / "clips"


class VarTemplate(string.Template):
    """``${caller}``, ``${custom.account}``; ``$$`` is a literal dollar sign."""

    idpattern = r"(?a:[_a-z][_a-z0-9]*(?:\.[_a-z0-9]+)?)"


def template_variables(text: str) -> list[str]:
    """The variable names a template uses, in order (invalid placeholders raise ValueError)."""
    template = VarTemplate(text)
    if not template.is_valid():
        bad = re.search(r"\$(?!\$|\{?[_a-zA-Z])", text) or re.search(r"\$\{[^}]*$", text)
        where = repr(text[bad.start() : bad.start() + 12]) if bad else "a '$'"
        raise ValueError(
            f"got {where}, expected ${{name}} or $name placeholders (write $$ for a dollar sign)"
        )
    return template.get_identifiers()


class Persona(_Strict):
    """One bot persona, validated; immutable so a call keeps the one it started with.

    ``id`` and ``source`` come from the file name and path, not from the YAML.
    """

    id: str
    source: Path | None = None
    model: str = gemini_models.DEFAULT_MODEL
    voice: str = "Charon"
    language: str | None = None
    response_modality: str = "audio"
    timezone: str = "UTC"
    default: bool = False
    numbers: tuple[str, ...] = ()
    system_instruction: str | None = None
    system_instruction_file: str | None = None
    custom_parameters: dict[str, str] = Field(default_factory=dict)
    greeting: Greeting = Greeting()
    session: Session = Session()
    audio_stream_end_silence_secs: float | None = Field(default=None, gt=0)
    barge_in: BargeIn = BargeIn()
    tools: Tools = Tools()
    limits: Limits = Limits()
    watchdog: Watchdog = Watchdog()
    records: Records = Records()
    post_call_webhook: PostCallWebhook | None = None
    prewarm: bool = True  # open the Live session at the webhook, before the stream (pre-warming)
    http_tools: HttpTools = ()  # HTTP requests the model may call (personas/tools.py)
    texts: PersonaTexts = TEXTS_FIELD  # after language, limits, tools: defaults by language
    dtmf: Dtmf = Dtmf()  # keys the caller presses: to the model, or actions (personas/dtmf.py)
    outbound: Outbound = Outbound()  # outbound calls: answering machines (personas/outbound.py)

    @field_validator("response_modality")
    @classmethod
    def _modality(cls, value: str) -> str:
        if value.lower() == "text":
            raise ValueError(
                "got 'text', expected 'audio': TEXT replies cannot be heard on a phone call"
            )
        if value.lower() != "audio":
            raise ValueError(f"got {value!r}, expected 'audio'")
        return "audio"

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"got {value!r}, expected an IANA time zone like 'Europe/Madrid' or 'UTC'"
            ) from None
        return value

    @field_validator("numbers")
    @classmethod
    def _numbers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for number in value:
            _e164(number)
        if len(set(value)) != len(value):
            raise ValueError(f"got {list(value)!r}, expected each number once")
        return value

    @field_validator("language")
    @classmethod
    def _language(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[a-z]{2,3}(-[A-Z]{2}|-[0-9]{3})?", value):
            raise ValueError(f"got {value!r}, expected a BCP-47 code like 'en-US' or 'es-ES'")
        return value

    @field_validator("custom_parameters")
    @classmethod
    def _custom(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not re.fullmatch(r"[_a-z0-9]+", name, re.ASCII):
                raise ValueError(f"got {name!r}, expected lower_case names (a-z, 0-9, _)")
        return value

    @model_validator(mode="after")
    def _instruction(self) -> Persona:
        if not (self.system_instruction and self.system_instruction.strip()):
            raise ValueError(
                "got no system_instruction, expected system_instruction (text) or "
                "system_instruction_file (a path relative to the persona file)"
            )
        return self

    # --- derived values ------------------------------------------------------------------

    @property
    def spec(self) -> gemini_models.ModelSpec | None:
        """The capability-table entry of this persona's model (``None`` if unknown)."""
        return gemini_models.lookup(self.model)

    def api_version(self) -> str:
        """``v1alpha`` when a switched-on feature is documented to need it, else ``v1beta``."""
        return "v1alpha" if self.v1alpha_features() else "v1beta"

    def v1alpha_features(self) -> list[str]:
        """Field paths of features that force ``v1alpha`` on this model."""
        spec = self.spec
        if spec is None:
            return []
        needs = []
        if self.session.affective_dialog and spec.affective_dialog == "v1alpha":
            needs.append("session.affective_dialog")
        if self.session.proactive_audio is not None and spec.proactive_audio == "v1alpha":
            needs.append("session.proactive_audio")
        return needs

    @property
    def tools_async(self) -> bool:
        """Register tool handlers with ``cancel_on_interruption=False`` (NON_BLOCKING)."""
        spec = self.spec
        return spec is not None and not spec.sync_tools

    def template_names(self) -> set[str]:
        """Every variable name a template may use."""
        return {*BUILTIN_VARIABLES, *(f"custom.{k}" for k in self.custom_parameters)}

    def _render(self, text: str, variables: Mapping[str, str]) -> str:
        values = {f"custom.{k}": v for k, v in self.custom_parameters.items()}
        values.update(variables)
        # Every path to the model passes here: call values go in as data (``quoting``).
        return VarTemplate(text).substitute(template_values(values))

    def render_system_instruction(self, variables: Mapping[str, str]) -> str:
        """The system instruction with ``${…}`` filled, call values as data (``quoting``).

        The HTTP tools' notes (what to say while waiting, ``personas/tools.py``) end it.
        """
        return with_tool_notes(self._render(self.system_instruction or "", variables), self)

    def greeting_instruction(self, variables: Mapping[str, str]) -> str | None:
        """The developer message that makes the model greet; ``None`` when it waits."""
        text = self.greeting.text
        if self.greeting.mode == "wait" or text is None:
            return None
        rendered = self._render(text, variables)
        if self.greeting.mode == "say":
            return (
                "The call has just connected. Greet the caller by saying exactly these words, "
                f"word for word, and nothing else:\n{rendered}"
            )
        return f"The call has just connected. {rendered}"

    def clip_paths(self) -> tuple[Path, Path]:
        """The holding and apology clips: the persona's own, else the shipped ones."""
        lang = "es" if (self.language or "").startswith("es") else "en"
        base = self.source.parent if self.source is not None else Path.cwd()
        w = self.watchdog
        hold = base / w.holding_clip if w.holding_clip else SHIPPED_CLIPS / f"hold_{lang}.wav"
        sorry = base / w.apology_clip if w.apology_clip else SHIPPED_CLIPS / f"apology_{lang}.wav"
        return hold, sorry

    def connect_config(self, system_instruction: str) -> tuple[str, LiveConnectConfig]:
        """The model (``models/<name>``) and complete ``LiveConnectConfig`` of a call."""
        return persona_setup.connect_config(self, system_instruction)


def persona_fields() -> dict[tuple[str, ...], Any]:
    """Every YAML key path the schema accepts (for did-you-mean on nested keys)."""
    out: dict[tuple[str, ...], Any] = {}

    def walk(model: type[BaseModel], prefix: tuple[str, ...]) -> None:
        for name, info in model.model_fields.items():
            out[(*prefix, name)] = info
            ann = info.annotation
            if getattr(ann, "__origin__", None) is dict:
                continue  # a mapping's entries sit under the user's own keys (dtmf.keys."0")
            for cand in getattr(ann, "__args__", (ann,)):
                if isinstance(cand, type) and issubclass(cand, BaseModel):
                    walk(cand, (*prefix, name))

    walk(Persona, ())
    return out
