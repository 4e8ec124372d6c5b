"""The fuzz run: Hypothesis draws batches of attacks, the real server answers, the oracle judges.

Hypothesis runs in a process of its own (``sim.fuzz.drawer``): it draws each example (a batch of
messages or requests) and hands it over; ``fuzz`` runs it on the event loop that serves the
server, so the server, its calls and the neighbour call keep the loop to themselves between
batches, and Hypothesis's memory and collections stay out of their process. A batch is judged
at once (bad close codes, 5xx, new oracle problems), which lets Hypothesis shrink a failure to a
minimal batch. Rounds of examples (``draw_rounds``), each with its own seed, run until at least
``min_inputs`` inputs were tried.

Deterministic by default (seed :data:`DEFAULT_SEED`, no example database): a red run repeats.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from sim.fuzz.drawer import Drawer
from sim.fuzz.oracle import Oracle
from sim.fuzz.strategies import STREAM_SID, Message, media_messages, webhook_requests
from sim.fuzz.targets import MediaTarget, WebhookTarget

DEFAULT_SEED = 13
# Events on a running call: mostly media (as Twilio sends), a `stop` only now and then (it ends
# the call, and a new call costs a Gemini session).
CALL_EVENTS = ["media"] * 8 + ["mark", "dtmf", "mark", "dtmf", "connected", "start"]
STOP = Message("twilio", '{"event":"stop","streamSid":"' + STREAM_SID + '"}')


# Batches per hypothesis run: hypothesis keeps a run's state until it ends (~150 objects a
# batch), and frees it in one full collection of the drawing process. Kept at 600 since the
# drawer moved out of the server's process, so that a seed draws the batches it drew before.
MAX_ROUND_BATCHES = 600


def _maybe_stopped(batch: list[Message]) -> st.SearchStrategy[list[Message]]:
    """The batch, or now and then the batch then ``stop`` (named: see ``_json_containers``)."""
    return st.sampled_from([batch] * 12 + [[*batch, STOP]])


def examples() -> st.SearchStrategy[tuple[str, list[Any]]]:
    """One batch: junk before ``start``, junk on a running call, or webhook requests."""
    return st.one_of(
        st.tuples(st.just("before_start"), st.lists(media_messages(), min_size=1, max_size=25)),
        st.tuples(
            st.just("on_call"),
            st.lists(media_messages(CALL_EVENTS), min_size=1, max_size=30).flatmap(_maybe_stopped),
        ),
        st.tuples(st.just("webhook"), st.lists(webhook_requests(), min_size=1, max_size=6)),
    )


# Batches drawn by ``warm_up``: enough to reach every text strategy's character tables.
WARM_UP_BATCHES = 50


def warm_up() -> None:
    """Draw some batches, so Hypothesis's first-use work is done before anything is timed.

    In a fresh checkout (no ``.hypothesis/`` cache) its first draws in a process scan the source
    of every local module for constants and build the character tables of the text strategies:
    ~1.5 s of work with long stretches that hold the GIL. When Hypothesis ran in a thread of the
    server's process, the neighbour call heard it as 0.16-0.45 s holes (a clean CI run failed on
    it). The drawing process does it before it says it is ready, so that the core it takes is
    not taken while the calls that are measured run (~0.2 s once cached).
    """

    @settings(
        max_examples=WARM_UP_BATCHES,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(example=examples())
    def once(example: tuple[str, list[Any]]) -> None:
        del example

    once()


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


def draw_rounds(
    min_inputs: int,
    fuzz_seed: int,
    run: Callable[[str, list[Any]], list[str]],
    tried: Callable[[], int],
    *,
    shrink: bool = True,
) -> None:
    """Rounds of Hypothesis examples, each run by ``run``, until ``min_inputs`` were tried.

    Runs in the drawing process (``sim.fuzz.drawer``); ``run`` hands a batch to the server's
    side and returns its problems, ``tried`` the inputs sent so far. A batch with problems fails
    its example (AssertionError, raised after Hypothesis shrank it).
    """
    round_seed = fuzz_seed
    while tried() < min_inputs:
        # ~8 inputs a batch on average; 50 to MAX_ROUND_BATCHES batches a round.
        n = min(MAX_ROUND_BATCHES, max(50, (min_inputs - tried()) // 8))
        _one_round(round_seed, n, shrink, run)
        round_seed += 1


def _one_round(
    round_seed: int,
    max_examples: int,
    shrink: bool,
    run: Callable[[str, list[Any]], list[str]],
) -> None:
    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if shrink else [])

    @seed(round_seed)
    @settings(
        max_examples=max_examples,
        database=None,
        deadline=None,
        phases=phases,
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
        print_blob=False,
    )
    @given(example=examples())
    def attack(example: tuple[str, list[Any]]) -> None:
        kind, batch = example
        problems = run(kind, batch)
        assert not problems, "; ".join(problems)

    attack()


def random_seed() -> int:
    """A fresh seed, for runs that explore (print it: it reproduces the run)."""
    return random.SystemRandom().randrange(2**31)
