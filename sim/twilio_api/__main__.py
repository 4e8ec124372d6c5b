"""``python -m sim.twilio_api``: the fake Twilio REST API on its own, for a server to dial through.

Prints one JSON line (``url``, ``account_sid``, ``auth_token``) and serves until interrupted.
Start ``voicebot serve`` with ``TWILIO_API_BASE_URL=url TWILIO_ACCOUNT_SID=… TWILIO_AUTH_TOKEN=…
PUBLIC_URL=http://127.0.0.1:8080``, then ``voicebot dial`` with the same variables.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from typing import get_args

from sim.twilio_api.numbers import FakeTwilioConfig, Kind, NumberBehaviour
from sim.twilio_api.server import running_twilio_api


def behaviour_arg(text: str) -> tuple[str, NumberBehaviour]:
    """``+15551230000=machine`` as (number, behaviour)."""
    number, _, kind = text.partition("=")
    if kind not in get_args(Kind) or not number.startswith("+"):
        raise argparse.ArgumentTypeError(
            f"got {text!r}, expected +NUMBER=KIND with KIND one of {', '.join(get_args(Kind))}"
        )
    return number, NumberBehaviour(kind)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    """Serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m sim.twilio_api", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cps", type=float, default=1.0, help="account calls per second")
    parser.add_argument("--time-scale", type=float, default=1.0, help="network waits ×")
    parser.add_argument(
        "--number", action="append", type=behaviour_arg, default=[], metavar="+1…=KIND",
        help="person, machine, busy, no-answer or failed (default: person)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    config = FakeTwilioConfig(cps=args.cps, time_scale=args.time_scale, numbers=dict(args.number))

    async def serve() -> None:
        async with running_twilio_api(config, args.host, args.port) as api:
            print(json.dumps({"url": api.url, "account_sid": config.account_sid,
                              "auth_token": config.auth_token}), flush=True)  # fmt: skip
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
