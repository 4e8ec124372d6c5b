"""Bot personas: which bot answers which number, checked against the model before use.

Each ``config/personas/<id>.yaml`` is one ``Persona`` (``schema``, its YAML sections in
``sections``, its fixed phrases per language in ``texts``), read by ``yaml_source``,
loaded and checked against the model table by ``loader`` and ``checks``, mapped onto the Live
API (``LiveConnectConfig`` and the wire ``setup``) by ``setup`` and ``setup_wire``, with Live API
rejections explained by ``rejections``.
This package is the public face: ``load_personas``, ``PersonaSet`` (routing by the called
number), ``call_variables`` (template values for one call), ``setup_message`` (the exact Live
API ``setup``) and ``explain_rejection`` (a Live API close turned into a fix). It may import
pydantic, PyYAML, ``pipelines.gemini_models`` and (lazily, inside ``setup``) google-genai's
public types; nothing else of ``pipelines``, never ``bot`` or ``sim``.
"""

from pipelines.personas.loader import PersonaConfigError
from pipelines.personas.persona_set import PersonaSet, load_personas
from pipelines.personas.rejections import explain_rejection
from pipelines.personas.schema import Persona
from pipelines.personas.sections import (
    BargeIn,
    EndCallTool,
    Greeting,
    Limits,
    Session,
    Tools,
    TransferTool,
)
from pipelines.personas.setup import enabled_tools, setup_message
from pipelines.personas.variables import call_variables

__all__ = [
    "BargeIn",
    "EndCallTool",
    "Greeting",
    "Limits",
    "Persona",
    "PersonaConfigError",
    "PersonaSet",
    "Session",
    "Tools",
    "TransferTool",
    "call_variables",
    "enabled_tools",
    "explain_rejection",
    "load_personas",
    "setup_message",
]
