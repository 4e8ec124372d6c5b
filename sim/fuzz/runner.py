"""The fuzz run: Hypothesis draws batches of attacks, the real server answers, the oracle judges.

Hypothesis runs in a process of its own (``sim.fuzz.drawer``): it draws each example (a batch of
messages or requests) and hands it over; ``fuzz`` runs it on the event loop that serves the
server, so the server, its calls and the neighbour call keep the loop to themselves between
batches, and Hypothesis's memory and collections stay out of their process. A batch is judged
at once (bad close codes, 5xx, new oracle problems), which lets Hypothesis shrink a failure to a
minimal batch. Rounds of examples (``sim.fuzz.drawer.draw_rounds``), each with its own seed, run
until at least the drawer's ``min_inputs`` inputs were tried.

Deterministic by default (seed :data:`DEFAULT_SEED`, no example database): a red run repeats.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from sim.fuzz.drawer import Drawer
from sim.fuzz.oracle import Oracle
from sim.fuzz.targets import MediaTarget, WebhookTarget

DEFAULT_SEED = 13


@dataclass
class Figures:
    """What a fuzz run tried and found."""

    seed: int
    inputs: dict[str, int] = field(default_factory=dict)
    examples: int = 0
    calls_started: int = 0
    close_codes: dict[str, int] = field(default_factory=dict)
    http_statuses: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    secs: float = 0.0

    @property
    def inputs_tried(self) -> int:
        """Messages and requests sent."""
        return sum(self.inputs.values())

    @property
    def crashes(self) -> int:
        """Unhandled errors, 5xx answers and bad closes."""
        return len(self.problems)

    def summary(self) -> str:
        """One paragraph for a terminal."""
        return (
            f"fuzz (seed {self.seed}): {self.inputs_tried} inputs in {self.examples} batches, "
            f"{self.secs:.1f} s; crashes {self.crashes}; calls started {self.calls_started}\n"
            f"  inputs by kind: {dict(sorted(self.inputs.items()))}\n"
            f"  close codes: {self.close_codes}; HTTP statuses: {self.http_statuses}"
            + "".join(f"\n  PROBLEM: {p}" for p in self.problems[:20])
        )


async def fuzz(base_url: str, drawer: Drawer, *, auth_token: str | None = None) -> Figures:
    """Run the batches ``drawer`` draws against the server at ``base_url``, judging each.

    Args:
        base_url: The server (``http://127.0.0.1:PORT``), served by this event loop or another.
        drawer: The drawing process, started (it holds the seed, the inputs to try, and whether
            to shrink or keep going).
        auth_token: The server's ``TWILIO_AUTH_TOKEN``, if set (upgrades and webhooks are then
            signed; generated webhooks are signed validly, wrongly or not at all).

    Returns:
        The figures; ``problems`` lists what failed (the first failing batch stops the run,
        unless the drawer keeps going).
    """
    figures = Figures(seed=drawer.fuzz_seed)
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        media = MediaTarget(session, base_url, auth_token)
        hooks = WebhookTarget(session, base_url, auth_token)
        with Oracle() as oracle:

            async def run_batch(kind: str, batch: list[Any]) -> list[str]:
                mark = oracle.mark()
                if kind == "before_start":
                    problems = await media.before_start(batch)
                elif kind == "on_call":
                    problems = await media.on_call(batch)
                else:
                    problems = []
                    for req in batch:
                        problems += await hooks.send(req)
                problems += oracle.since(mark)
                if drawer.keep_going:
                    figures.problems.extend(p for p in problems if p not in figures.problems)
                    return []
                return problems

            def tried() -> int:
                return sum(media.inputs.values()) + sum(hooks.inputs.values())

            try:
                if failure := await drawer.serve(run_batch, tried):
                    figures.problems.append(failure)
            finally:
                figures.examples = drawer.examples
                figures.problems += [f"{p} (at the end)" for p in await media.hang_up()]
            await asyncio.sleep(0.2)  # errors logged as the last call winds down
            seen = "\n".join(figures.problems)
            figures.problems += [p for p in dict.fromkeys(oracle.problems) if p not in seen]
    for name, counter in (("media", media.inputs), ("hooks", hooks.inputs)):
        for kind, n in counter.items():
            figures.inputs[kind if name == "media" else "webhook"] = n
    figures.calls_started = media.calls_started
    figures.close_codes = {str(k): v for k, v in media.close_codes.items()}
    figures.http_statuses = {str(k): v for k, v in sorted(hooks.statuses.items())}
    figures.secs = time.monotonic() - started
    return figures


def random_seed() -> int:
    """A fresh seed, for runs that explore (print it: it reproduces the run)."""
    return random.SystemRandom().randrange(2**31)
