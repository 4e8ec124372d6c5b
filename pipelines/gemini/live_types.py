"""google-genai's Live API types, built before the first call rather than during it.

google-genai's pydantic models build their validators on first use. On the Live path that
first use falls inside the first call a process serves: the setup config (13 models, ~40 ms
in one piece on the event loop while the webhook answers), then the connect, the setup
reply and each server message kind the first time it comes (10-25 ms each, a goAway's in
the middle of a call). Every call on the process hears those stalls. ``build_live_types``
builds them all (~100 models, ~0.1 s of CPU) where the server starts, off the event loop;
in a process that has built them it only walks them (1-2 ms).
"""

from __future__ import annotations

import typing

from google.genai import types
from pydantic import BaseModel

# The messages a call sends and receives; every model their fields reach is built too.
ROOTS: tuple[type[BaseModel], ...] = (
    types.LiveConnectConfig,
    types.LiveClientMessage,
    types.LiveServerMessage,
    types.LiveSendRealtimeInputParameters,
    types.Content,
    types.Tool,
)


def build_live_types(roots: tuple[type[BaseModel], ...] = ROOTS) -> int:
    """Build the validators of ``roots`` and every model their fields reach; how many were built."""
    seen: set[type[BaseModel]] = set()
    todo = list(roots)
    built = 0
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        if not model.__pydantic_complete__:
            model.model_rebuild(raise_errors=False)
            built += 1
        for field in model.model_fields.values():
            todo.extend(_models_in(field.annotation))
    return built


def _models_in(annotation: object) -> list[type[BaseModel]]:
    """The pydantic models an annotation names (inside ``Optional``, ``list``, ``dict``...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
