"""Gemini Live API emulator: the back end of ``make run`` without a key and of every test.

``LiveEmulator`` serves BidiGenerateContent over TLS on loopback for the unmodified
google-genai SDK and Pipecat's ``GeminiLiveLLMService``. It holds the server and one session per
socket (``server``, ``session``), what a session does (``caller_input``, ``wire``, ``voices``,
``vad``, ``tools``, ``resumption``, ``limits``, ``faults``, ``misbehaviour``), the protocol and
setup checks (``protocol``, ``schema``), its configuration (``config``) and the
``voicebot emulator`` command (``cmd``). It may import the model table of ``pipelines`` (the
service's per-model rules) and third-party libraries; never ``bot`` or another ``sim`` package.
Names are imported lazily so ``voicebot --help`` does not load aiohttp and numpy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sim.emulator.config import EmulatorConfig, FaultPlan, ToolScript, parse_faults
    from sim.emulator.server import LiveEmulator

__all__ = ["EmulatorConfig", "FaultPlan", "LiveEmulator", "ToolScript", "parse_faults"]
_WHERE = {"LiveEmulator": "sim.emulator.server"}


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'sim.emulator' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE.get(name, "sim.emulator.config")), name)
