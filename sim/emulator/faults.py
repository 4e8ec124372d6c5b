"""Timed events of one session: the service's limits, and goAway/close faults."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from loguru import logger

from sim.emulator import protocol as p
from sim.emulator.limits import limit_steps

if TYPE_CHECKING:
    from sim.emulator.session import LiveSession


def _chosen(session_id: str, numbers: str) -> bool:
    """Whether session ``s<N>`` is one of ``numbers`` (joined by ``+``; empty: all)."""
    wanted = numbers.replace("+", " ").split()
    return not wanted or session_id.removeprefix("s") in wanted


async def fault_timer(session: LiveSession) -> None:
    """Run a session's limits (`sim.emulator.limits`) and timed faults: goAway and closes."""
    faults, cfg = session.emu.faults, session.cfg
    plan: list[tuple[float, str, float]] = []
    if faults.goaway_after is not None:
        plan.append((faults.goaway_after, "goaway", faults.time_left))
        plan.append((faults.goaway_after + faults.time_left, "deadline", 0.0))
    if faults.close_after is not None and _chosen(session.id, faults.close_sessions):
        plan.append((faults.close_after, "close", 0.0))
    if faults.lifetime is not None:
        lead = min(60.0, faults.lifetime / 10)
        plan.append((faults.lifetime - lead, "goaway", lead))
        plan.append((faults.lifetime, "deadline", 0.0))
    plan.extend(limit_steps(session))
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        for at, action, time_left in sorted(plan):
            await asyncio.sleep(max(0.0, start + at - loop.time()))
            if session.close_code is not None:
                return
            if action == "goaway":
                await session.send(p.go_away(time_left))
                continue
            if action == "deadline":
                await session.close(1011, p.DEADLINE_EXPIRED)
            elif action == "session_end":
                await session.close(cfg.session_limit_code, cfg.session_limit_reason)
            else:
                await session.close(faults.close_code, faults.close_reason)
            return  # closed: the later steps would only keep the session's teardown waiting
    except (ConnectionError, RuntimeError) as exc:
        logger.debug("emulator {}: fault timer stopped: {!r}", session.id, exc)
