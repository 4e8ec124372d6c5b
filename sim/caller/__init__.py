"""The simulated Twilio caller: one phone call placed exactly as Twilio places it.

Holds the call plan (``plan``: what the caller says and does), the clockless caller state machine
(``core`` with ``steps``, ``microphone``, ``phone``, ``line_noise`` and ``twilio_checks``), what
a call felt like (``result``), Twilio's webhook and TwiML side (``twilio_webhook``), the asyncio
driver (``driver.place_call``), the shared 20 ms sender clock (``frame_ticker``), the
``voicebot call`` command (``cmd``) and a hand-driven signed stream for attack tests
(``hand_stream``). It may import the standard library, numpy, aiohttp and loguru; never ``bot``,
``pipelines`` or another ``sim`` package (the gevent caller in ``deploy/locustfile.py`` reuses
``core``). Names are re-exported lazily so ``voicebot --help`` loads no aiohttp.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sim.caller.driver import place_call
    from sim.caller.plan import CallPlan, Utterance
    from sim.caller.result import CallEvent, CallResult
    from sim.caller.twilio_webhook import (
        DEFAULT_FROM,
        DEFAULT_TO,
        Twiml,
        parse_twiml,
        twilio_signature,
        voice_url,
        webhook_params,
        write_wav,
    )

__all__ = [
    "DEFAULT_FROM",
    "DEFAULT_TO",
    "CallEvent",
    "CallPlan",
    "CallResult",
    "Twiml",
    "Utterance",
    "parse_twiml",
    "place_call",
    "twilio_signature",
    "voice_url",
    "webhook_params",
    "write_wav",
]
_WHERE = {
    "place_call": "sim.caller.driver",
    "CallPlan": "sim.caller.plan",
    "Utterance": "sim.caller.plan",
    "CallEvent": "sim.caller.result",
    "CallResult": "sim.caller.result",
}


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'sim.caller' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE.get(name, "sim.caller.twilio_webhook")), name)
