"""``voicebot campaign``: call every number of a CSV within concurrency and per-second limits.

``voicebot campaign numbers.csv --persona ID --concurrency 5 --cps 1 [--from +1…]
[--out results.csv] [--poll-secs 2]``. The CSV has a header line with a ``to`` column; every
other column is a parameter of the call (one of the persona's ``custom_parameters``). The
scheduler (``bot.outbound.campaign``) places the calls; each row's result is printed as it
ends (line, number with its last four digits, SID, final status, who answered) and, with
``--out``, written to a CSV (the row's columns plus ``sid``, ``status``, ``answered_by``,
``duration_secs``, ``error``). Exit 0 when every row was placed, 1 when some were not, 2 on bad
arguments or a bad CSV (the line and the field are named).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from bot.outbound.dial_cmd import add_twilio_arguments

if TYPE_CHECKING:
    from bot.outbound.campaign import CampaignRow, RowResult
    from bot.outbound.placing import DialRequest
    from bot.settings import Settings
    from pipelines.personas.schema import Persona

    # A row's request, as checked up front, with its persona and caller ID.
    Checked = tuple[DialRequest, Persona, str]


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``campaign`` arguments."""
    parser.add_argument("csv", type=Path, metavar="FILE.csv", help="a 'to' column, then params")
    add_twilio_arguments(parser)
    parser.add_argument("--concurrency", type=int, default=1, metavar="N",
                        help="calls not yet ended at once, at most (default 1)")  # fmt: skip
    parser.add_argument("--cps", type=float, default=1.0, metavar="R",
                        help="calls placed per second, at most (default 1: Twilio's "
                        "default account limit)")  # fmt: skip
    parser.add_argument("--poll-secs", type=float, default=2.0, metavar="S",
                        help="how often each open call's status is read (default 2)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, metavar="RESULTS.csv")


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run the campaign; the exit status."""
    from bot.outbound.campaign import read_rows
    from bot.outbound.placing import DialError, DialRequest, check_request, need_public_url

    out = out or sys.stdout
    if args.concurrency < 1 or args.cps <= 0 or args.poll_secs <= 0:
        print("voicebot campaign: --concurrency must be ≥ 1, --cps and --poll-secs > 0",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        rows = read_rows(args.csv.read_text(encoding="utf-8"), str(args.csv))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        print(f"voicebot campaign: {e}", file=sys.stderr)
        return 2
    from bot.outbound.dial_cmd import setup

    settings, personas = setup(args.personas)
    checked: dict[int, Checked] = {}  # by CSV line: every row is checked before the first call
    try:
        public_url = need_public_url(settings.public_url)
        for row in rows:
            request = DialRequest(row.to, args.persona, args.from_, row.params)
            checked[row.line] = (request, *check_request(request, personas))
    except DialError as e:
        where = f"{args.csv}:{row.line}: " if "row" in locals() else ""
        print(f"voicebot campaign: {where}{e}", file=sys.stderr)
        return 2
    return asyncio.run(_campaign(settings, checked, public_url, rows, args, out))


async def _campaign(
    settings: Settings,
    checked: dict[int, Checked],
    public_url: str,
    rows: list[CampaignRow],
    args: argparse.Namespace,
    out: TextIO,
) -> int:
    import aiohttp

    from bot.outbound.campaign import Campaign
    from bot.outbound.dial_cmd import rest_client
    from bot.outbound.placing import call_form
    from bot.records.record import mask_number
    from bot.twilio_rest import TwilioRestError

    async with aiohttp.ClientSession() as session:
        rest = rest_client(settings, session)
        # One cheap request before anyone is dialled: wrong credentials or an unreachable API
        # end the campaign once, not row by row; and the first call's request does not pay for
        # opening the connection (it reached Twilio 40-50 ms late on a loaded host, bunching
        # the first two calls closer than 1/cps).
        try:
            await rest.list_calls(PageSize="1")
        except TwilioRestError as e:
            print(f"voicebot campaign: no call placed: {e}", file=sys.stderr)
            return 1

        async def place(row: CampaignRow) -> dict[str, Any]:
            request, persona, from_ = checked[row.line]
            return await rest.create_call(call_form(request, persona, from_, public_url))

        def show(result: RowResult) -> None:
            what = result.error or f"{result.status} {result.answered_by or ''}".rstrip()
            print(f"{result.row.line:>5}  {mask_number(result.row.to)}  {result.sid or '-'}  "
                  f"{what}", file=out, flush=True)  # fmt: skip

        campaign = Campaign(
            place, rest.fetch_call, concurrency=args.concurrency, cps=args.cps,
            poll_secs=args.poll_secs,
        )  # fmt: skip
        results = await campaign.run(rows, show)
    not_placed = sum(1 for r in results if r.sid is None)
    print(
        f"{len(results)} rows: {len(results) - not_placed} placed, {not_placed} not placed; "
        f"at most {campaign.max_open} open at once; {rest.retried_429} 429s retried",
        file=out,
    )
    if args.out is not None:
        write_results(args.out, results)
    return 1 if not_placed else 0


def write_results(path: Path, results: list[RowResult]) -> None:
    """The results as CSV: the row's columns, then what became of it."""
    import csv

    params = sorted({k for r in results for k in r.row.params})
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["line", "to", *params, "sid", "status", "answered_by", "duration_secs",
                         "error"])  # fmt: skip
        for r in results:
            writer.writerow([
                r.row.line, r.row.to, *(r.row.params.get(k, "") for k in params), r.sid or "",
                r.status, r.answered_by or "", r.duration_secs if r.duration_secs is not None
                else "", r.error or "",
            ])  # fmt: skip
