"""Connection and session limits like the service's: when ``goAway`` comes and the socket closes.

The service caps a connection at ~10 minutes, with ``goAway`` ~60 s before the cut, and an audio
session without ``contextWindowCompression`` at 15 minutes in all, across resumed connections
(ai.google.dev/gemini-api/docs/live-session). The emulator does the same by default, scaled by
``EmulatorConfig.time_scale`` so a test runs a 10-minute connection in seconds.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sim.emulator.session import LiveSession

# (seconds after setupComplete, action, goAway timeLeft) as the fault timer runs them.
Step = tuple[float, str, float]


def has_compression(raw_setup: dict[str, Any]) -> bool:
    """Whether the setup asked for context window compression (either casing)."""
    return any(raw_setup.get(k) is not None for k in ("contextWindowCompression",
                                                      "context_window_compression"))  # fmt: skip


def limit_steps(session: LiveSession, now: float | None = None) -> list[Step]:
    """The session's limit steps: ``goaway`` then ``deadline`` (connection) or ``session_end``.

    A ``goAway`` is sent before each limit, ``goaway_lead_secs`` ahead (less if the limit is
    nearer); the session limit counts from ``Conversation.started_at``, so a resumed session
    has only what its first connections left.
    """
    cfg, faults = session.cfg, session.emu.faults
    scale = cfg.time_scale
    lead = cfg.goaway_lead_secs * scale
    steps: list[Step] = []
    if faults.lifetime is None and cfg.connection_secs:
        connection = cfg.connection_secs * scale
        steps += _before(connection, min(lead, connection), "deadline")
    assert session.info is not None
    if cfg.audio_session_secs and not has_compression(session.info.raw):
        started = session.conv.started_at
        age = 0.0 if started is None else (now or time.monotonic()) - started
        remaining = max(0.0, cfg.audio_session_secs * scale - age)
        steps += _before(remaining, min(lead, remaining), "session_end")
    return steps


def _before(at: float, lead: float, action: str) -> list[Step]:
    steps: list[Step] = [(at, action, 0.0)]
    if lead > 0:
        steps.insert(0, (at - lead, "goaway", lead))
    return steps
