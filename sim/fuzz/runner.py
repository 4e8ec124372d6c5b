"""The fuzz run: Hypothesis draws batches of attacks, the real server answers, the oracle judges.

Hypothesis runs in a worker thread; each example (a batch of messages or requests) is handed
to the event loop that serves the server and runs there (``run_coroutine_threadsafe``), so the
server, its calls and the neighbour call keep the loop to themselves between batches. A batch
is judged at once (bad close codes, 5xx, new oracle problems), which lets Hypothesis shrink a
failure to a minimal batch. Rounds of examples, each with its own seed, run until at least
``min_inputs`` inputs were tried.

Deterministic by default (seed :data:`DEFAULT_SEED`, no example database): a red run repeats.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from sim.fuzz.oracle import Oracle
from sim.fuzz.strategies import STREAM_SID, Message, media_messages, webhook_requests
from sim.fuzz.targets import MediaTarget, WebhookTarget

DEFAULT_SEED = 13
BATCH_TIMEOUT_SECS = 30.0
# Events on a running call: mostly media (as Twilio sends), a `stop` only now and then (it ends
# the call, and a new call costs a Gemini session).
CALL_EVENTS = ["media"] * 8 + ["mark", "dtmf", "mark", "dtmf", "connected", "start"]
STOP = Message("twilio", '{"event":"stop","streamSid":"' + STREAM_SID + '"}')


# Batches per hypothesis run: hypothesis keeps a run's state until it ends, in this process,
# where its full collection would stall the server under test (a 530 ms pause after a run of
# 2,500 batches); the harness must not be the stall it measures.
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
    ~1.5 s of work with long stretches that hold the GIL. Done in the fuzzing thread next to a
    live call, the server on the event loop heard it as 0.16-0.45 s holes in the neighbour call
    (a clean CI run failed on it; with the cache, 0 ms). Blocking: call it in a thread, before
    the calls that are measured start (~0.2 s once cached).
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


async def fuzz(
    base_url: str,
    *,
    auth_token: str | None = None,
    min_inputs: int = 10_000,
    fuzz_seed: int = DEFAULT_SEED,
    shrink: bool = True,
    keep_going: bool = False,
) -> Figures:
    """Fuzz the server at ``base_url`` until ``min_inputs`` were tried or a crash was found.

    Args:
        base_url: The server (``http://127.0.0.1:PORT``), served by this event loop or another.
        auth_token: The server's ``TWILIO_AUTH_TOKEN``, if set (upgrades and webhooks are then
            signed; generated webhooks are signed validly, wrongly or not at all).
        min_inputs: Inputs (messages and requests) to try at least.
        fuzz_seed: Seed of the first round (each further round uses the next one).
        shrink: Let Hypothesis shrink a failing batch to a minimal one.
        keep_going: Record problems and go on (to see every kind of crash in one run) instead
            of stopping at the first failing batch and shrinking it.

    Returns:
        The figures; ``problems`` lists what failed (the first failing batch stops the run).
    """
    loop = asyncio.get_running_loop()
    figures = Figures(seed=fuzz_seed)
    started = time.monotonic()
    stop = threading.Event()
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
                return problems + oracle.since(mark)

            def tried() -> int:
                return sum(media.inputs.values()) + sum(hooks.inputs.values())

            def rounds() -> None:
                round_seed = fuzz_seed
                while tried() < min_inputs and not stop.is_set():
                    # ~8 inputs a batch on average; 50 to MAX_ROUND_BATCHES batches a round.
                    n = min(MAX_ROUND_BATCHES, max(50, (min_inputs - tried()) // 8))
                    _one_round(round_seed, n, shrink, keep_going, run_batch, loop, figures)
                    round_seed += 1

            try:
                await asyncio.to_thread(rounds)
            except AssertionError as e:
                notes = "\n".join(getattr(e, "__notes__", []))
                figures.problems.append(f"{e}\n  minimal batch: {notes}")
            finally:
                stop.set()
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


def _one_round(
    round_seed: int,
    max_examples: int,
    shrink: bool,
    keep_going: bool,
    run_batch: Any,
    loop: asyncio.AbstractEventLoop,
    figures: Figures,
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
        figures.examples += 1
        kind, batch = example
        future = asyncio.run_coroutine_threadsafe(run_batch(kind, batch), loop)
        problems = future.result(timeout=BATCH_TIMEOUT_SECS)
        if keep_going:
            figures.problems.extend(p for p in problems if p not in figures.problems)
        else:
            assert not problems, "; ".join(problems)

    attack()


def random_seed() -> int:
    """A fresh seed, for runs that explore (print it: it reproduces the run)."""
    return random.SystemRandom().randrange(2**31)
