"""Hypothesis in a process of its own: it draws the batches, the server's process runs them.

A real attacker is another machine; an attacker in the server's process is a harness that
stalls what it measures. Hypothesis keeps a round's choice tree until the round ends (~90,000
objects after 600 batches), and the full collection that frees it stopped every thread of the
process for 60-250 ms: in the server's process, the neighbour call heard it as a hole (a clean
CI run failed the 100 ms bound at 112 ms). Here it stops only this process.

``Drawer`` (the server's side) starts ``python -m sim.fuzz.drawer`` and answers it; the child
runs the rounds of ``sim.fuzz.runner`` with Hypothesis and, for each example, sends the batch
and waits for the server side's verdict, so a failing batch is still shrunk by Hypothesis, and a
seed draws the same batches as when it ran in a thread. The protocol is length-prefixed pickle
frames on the child's stdin and stdout (the child's ``print`` and Hypothesis's reports go to
stderr):

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
from typing import Any, BinaryIO

_LEN = struct.Struct(">I")
# Longest a batch may take on the server's side before the run stops as hung.
BATCH_TIMEOUT_SECS = 30.0


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
        if await self._read() != ("ready",):
            raise DrawerDied("the drawing process did not start")
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
            (size,) = _LEN.unpack(await self._proc.stdout.readexactly(_LEN.size))
            frame: tuple[Any, ...] = pickle.loads(await self._proc.stdout.readexactly(size))
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
            raise SystemExit(0) from None  # the parent is gone (it stopped the run)

    def run(self, kind: str, batch: list[Any]) -> list[str]:
        self.send(("batch", kind, batch))
        head = self._in.read(_LEN.size)
        if len(head) < _LEN.size:
            raise SystemExit(0)  # the parent is gone (it stopped the run)
        (size,) = _LEN.unpack(head)
        problems, self.tried = pickle.loads(self._in.read(size))
        return list(problems)


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

    from sim.fuzz.runner import draw_rounds, warm_up

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
    except Exception:  # noqa: BLE001 - the parent reports it; the traceback is on stderr
        traceback.print_exc()
        failure = "the drawing process crashed: " + traceback.format_exc(limit=3)
    channel.send(("done", failure))
    return 0


if __name__ == "__main__":
    sys.exit(main())
