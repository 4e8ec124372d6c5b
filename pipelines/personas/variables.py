"""Template values for one call (``${caller}``, ``${local_time}``, ``${custom.X}``, ...).

The values are raw here; rendering (``Persona._render``) passes them through
``pipelines.personas.quoting`` so that call values reach the model as data only.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from pipelines.personas.schema import Persona


def call_variables(
    persona: Persona,
    *,
    caller: str,
    called: str,
    custom: Mapping[str, str],
    now: datetime | None = None,
) -> dict[str, str]:
    """Template values for one call.

    Args:
        persona: The persona answering.
        caller: Twilio ``From``.
        called: Twilio ``To``.
        custom: The stream's custom parameters (``<Parameter>``); they override the
            persona's ``custom_parameters`` defaults.
        now: The current time (any zone, or naive UTC); defaults to now.

    Returns:
        ``caller``, ``called``, ``local_time`` (``14:05``), ``local_date`` (``2026-03-01``),
        ``weekday``, ``timezone``, ``persona`` and ``custom.<name>`` for every parameter,
        unquoted and unchecked (rendering checks and quotes them).
    """
    zone = ZoneInfo(persona.timezone)
    moment = now or datetime.now(zone)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo("UTC"))
    local = moment.astimezone(zone)
    values = {
        "caller": caller,
        "called": called,
        "local_time": local.strftime("%H:%M"),
        "local_date": local.strftime("%Y-%m-%d"),
        "weekday": local.strftime("%A"),
        "timezone": persona.timezone,
        "persona": persona.id,
    }
    values.update({f"custom.{k}": v for k, v in persona.custom_parameters.items()})
    values.update({f"custom.{k}": str(v) for k, v in custom.items()})
    return values
