"""Hypothesis in a process of its own: it draws the batches, the server's process runs them.

A real attacker is another machine; an attacker in the server's process is a harness that
stalls what it measures. Hypothesis keeps a round's choice tree until the round ends (~90,000
objects after 600 batches), and the full collection that frees it stopped every thread of the
process for 60-250 ms: in the server's process, the neighbour call heard it as a hole (a clean
CI run failed the 100 ms bound at 112 ms). Here it stops only this process.

``Drawer`` (the server's side) starts ``python -m sim.fuzz.drawer`` and answers it; the child
runs rounds of Hypothesis examples (``draw_rounds``) and, for each example, sends the batch
and waits for the server side's verdict, so a failing batch is still shrunk by Hypothesis. A
seed draws the same batches run after run (no longer different ones by which test modules the
worker had imported: Hypothesis mixes in constants from the source of the loaded modules).
The protocol is length-prefixed pickle frames on the child's stdin and stdout (the child's
``print`` and Hypothesis's reports go to stderr):

- child: ``("ready",)`` after its warm-up (its first-use work is done before anything is timed);
- child: ``("batch", kind, batch)``; parent: ``(problems, inputs tried so far)``;
- child: ``("done", failure)``: ``failure`` is the assertion with its minimal batch, or None.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pickle
import struct
import sys
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, BinaryIO, NoReturn

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import FlakyFailure

from sim.fuzz.strategies import STREAM_SID, Message, media_messages, webhook_requests

_LEN = struct.Struct(">I")
# Longest a batch may take on the server's side before the run stops as hung.
BATCH_TIMEOUT_SECS = 30.0
# Longest the child may take to warm up, or to draw (and shrink) its next batch.
DRAW_TIMEOUT_SECS = 120.0


class DrawerDied(RuntimeError):
    """The drawing process ended without saying it was done."""


class Drawer:
    """The drawing process, from the server's side (``async with``: started and warmed up).

    Args:
        min_inputs: Inputs (messages and requests) to try at least.
        fuzz_seed: Seed of the first round (each further round uses the next one).
        shrink: Let Hypothesis shrink a failing batch to a minimal one.
        keep_going: Never fail a batch: ``fuzz`` records every problem and the run goes on
            (the child is told no problems, so it neither stops nor shrinks).
    """

    def __init__(
        self,
        *,
        min_inputs: int,
        fuzz_seed: int,
        shrink: bool = True,
        keep_going: bool = False,
    ) -> None:
        self.fuzz_seed = fuzz_seed
        self.keep_going = keep_going
        self.args = [str(min_inputs), str(fuzz_seed)] + ([] if shrink else ["--no-shrink"])
        self.examples = 0
        self._proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Drawer:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sim.fuzz.drawer",
            *self.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            ready = await self._read()
        except BaseException:
            await self.__aexit__()
            raise
        if ready != ("ready",):
            await self.__aexit__()
            raise DrawerDied(f"the drawing process did not start: {ready!r}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.returncode is None:
            proc.kill()
        await proc.wait()

    async def _read(self) -> tuple[Any, ...]:
        assert self._proc is not None and self._proc.stdout is not None
        try:
            async with asyncio.timeout(DRAW_TIMEOUT_SECS):
                (size,) = _LEN.unpack(await self._proc.stdout.readexactly(_LEN.size))
                frame: tuple[Any, ...] = pickle.loads(await self._proc.stdout.readexactly(size))
        except TimeoutError:
            raise DrawerDied(
                f"the drawing process said nothing for {DRAW_TIMEOUT_SECS:.0f} s"
            ) from None
        except asyncio.IncompleteReadError:
            code = await self._proc.wait()
            raise DrawerDied(
                f"the drawing process died (exit code {code}; see its stderr)"
            ) from None
        return frame

    async def _write(self, obj: object) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        data = pickle.dumps(obj)
        self._proc.stdin.write(_LEN.pack(len(data)) + data)
        await self._proc.stdin.drain()

    async def serve(
        self,
        run_batch: Callable[[str, list[Any]], Awaitable[list[str]]],
        tried: Callable[[], int],
    ) -> str | None:
        """Run every batch the child draws until it is done; its failure, if it found one."""
        while True:
            try:
                frame = await self._read()
            except DrawerDied as e:
                return str(e)
            if frame[0] == "done":
                failure: str | None = frame[1]
                return failure
            self.examples += 1
            try:
                problems = await asyncio.wait_for(run_batch(frame[1], frame[2]), BATCH_TIMEOUT_SECS)
            except TimeoutError:
                return f"a batch took longer than {BATCH_TIMEOUT_SECS:.0f} s: {frame[2]!r}"
            try:
                await self._write((problems, tried()))
            except ConnectionError:  # it died while the batch ran: the next read says how
                continue


# ---- the child ---------------------------------------------------------------------------------


# Events on a running call: mostly media (as Twilio sends), a `stop` only now and then (it ends
# the call, and a new call costs a Gemini session).
CALL_EVENTS = ["media"] * 8 + ["mark", "dtmf", "mark", "dtmf", "connected", "start"]
STOP = Message("twilio", '{"event":"stop","streamSid":"' + STREAM_SID + '"}')


# Batches per hypothesis run: hypothesis keeps a run's state until it ends (~150 objects a
# batch) and frees it in one full collection, now of the drawing process alone; this bounds
# the drawer's memory and that pause.
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


class _Channel:
    """The child's end: frames to the parent on the real stdout, its verdicts from stdin."""

    def __init__(self, out: BinaryIO, inp: BinaryIO) -> None:
        self._out, self._in = out, inp
        self.tried = 0

    def send(self, obj: object) -> None:
        data = pickle.dumps(obj)
        try:
            self._out.write(_LEN.pack(len(data)) + data)
            self._out.flush()
        except BrokenPipeError:
            _parent_gone()

    def run(self, kind: str, batch: list[Any]) -> list[str]:
        self.send(("batch", kind, batch))
        head = self._in.read(_LEN.size)
        if len(head) < _LEN.size:
            _parent_gone()
        (size,) = _LEN.unpack(head)
        body = self._in.read(size)
        if len(body) < size:
            _parent_gone()
        problems, self.tried = pickle.loads(body)
        return list(problems)


def _parent_gone() -> NoReturn:
    """End now: the parent stopped the run, or died.

    Not by raising SystemExit, which Hypothesis counts as a failure of the test and shrinks.
    """
    sys.stderr.flush()
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    """The child: warm up, say ready, run the rounds, say done."""
    parser = argparse.ArgumentParser(prog="python -m sim.fuzz.drawer")
    parser.add_argument("min_inputs", type=int)
    parser.add_argument("seed", type=int)
    parser.add_argument("--no-shrink", action="store_true")
    args = parser.parse_args(argv)
    # The frames own the real stdout; anything printed (Hypothesis's reports) goes to stderr.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    channel = _Channel(out, sys.stdin.buffer)

    warm_up()
    channel.send(("ready",))
    failure: str | None = None
    try:
        draw_rounds(
            args.min_inputs,
            args.seed,
            channel.run,
            lambda: channel.tried,
            shrink=not args.no_shrink,
        )
    except AssertionError as e:
        notes = "\n".join(getattr(e, "__notes__", []))
        failure = f"{e}\n  minimal batch: {notes}"
    except FlakyFailure as e:  # the batch failed, then passed when Hypothesis ran it again
        first = e.exceptions[0] if e.exceptions else e
        notes = "\n".join(getattr(e, "__notes__", []))
        failure = f"{first} (flaky: it passed when run again)\n  batch: {notes}"
    except Exception:  # noqa: BLE001 - the parent reports it; the traceback is on stderr
        traceback.print_exc()
        failure = "the drawing process crashed: " + traceback.format_exc(limit=3)
    channel.send(("done", failure))
    return 0


if __name__ == "__main__":
    sys.exit(main())
