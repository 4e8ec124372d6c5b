"""``python -m sim.fuzz``: fuzz a server and print the figures.

With ``--url`` it fuzzes a server already running (``voicebot serve``; pass ``--auth-token`` if
it has ``TWILIO_AUTH_TOKEN``); without, it starts the Live API emulator and the real server
in-process on loopback (with ``tests/personas``-like defaults: the shipped personas). Exit 1 if
anything crashed.

    .venv/bin/python -m sim.fuzz --inputs 100000 --seed random --keep-going
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any

from sim.fuzz.drawer import Drawer
from sim.fuzz.runner import DEFAULT_SEED, Figures, fuzz, random_seed


async def _run(args: argparse.Namespace, fuzz_seed: int) -> Figures:
    drawer = Drawer(
        min_inputs=args.inputs,
        fuzz_seed=fuzz_seed,
        shrink=not args.no_shrink,
        keep_going=args.keep_going,
    )
    if args.url:
        async with drawer:
            return await fuzz(args.url, drawer, auth_token=args.auth_token)
    from loguru import logger

    from sim.testing import running_emulator, running_server

    logger.remove()  # the oracle's own sink still sees every record
    settings: dict[str, Any] = {"max_calls": 100_000}
    if args.auth_token:
        settings["twilio_auth_token"] = args.auth_token
    async with contextlib.AsyncExitStack() as stack:
        emu = await stack.enter_async_context(running_emulator())
        server = await stack.enter_async_context(
            running_server(emu, Path(args.personas), **settings)
        )
        await stack.enter_async_context(drawer)
        return await fuzz(server.url, drawer, auth_token=args.auth_token)


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run the fuzzer, print the figures; 1 if anything crashed."""
    parser = argparse.ArgumentParser(prog="python -m sim.fuzz", description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="a running server (default: start one in-process)")
    parser.add_argument("--auth-token", help="the server's TWILIO_AUTH_TOKEN, if it has one")
    parser.add_argument("--inputs", type=int, default=10_000, help="inputs to try at least")
    parser.add_argument("--seed", default=str(DEFAULT_SEED), help="an integer, or 'random'")
    parser.add_argument("--keep-going", action="store_true", help="list every crash, not one")
    parser.add_argument("--no-shrink", action="store_true", help="report the first crash as is")
    parser.add_argument("--personas", default="config/personas", help="persona folder")
    args = parser.parse_args(argv)
    fuzz_seed = random_seed() if args.seed == "random" else int(args.seed)
    figures = asyncio.run(_run(args, fuzz_seed))
    print(figures.summary())
    return 1 if figures.crashes else 0


if __name__ == "__main__":
    sys.exit(main())
