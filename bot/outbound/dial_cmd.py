"""``voicebot dial``: place one outbound call through Twilio's REST API.

``voicebot dial --to +15551230000 --persona receptionist [--from +1…] [--param k=v …]
[--wait] [--json]``. Reads ``TWILIO_ACCOUNT_SID``, ``TWILIO_AUTH_TOKEN``, ``PUBLIC_URL`` (where
Twilio fetches the call's TwiML and posts its status; a running ``voicebot serve``) and
``TWILIO_API_BASE_URL`` like the server, and checks the persona against the persona folder
the server serves (``--personas`` / ``VOICEBOT_PERSONAS_DIR``). Prints the call's SID and
status (``--wait``: polls until the call ends and prints its final status and who answered).
Exit 0 placed (with ``--wait``: ended ``completed``), 1 refused or failed, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from bot.outbound.placing import DialRequest
    from bot.settings import Settings
    from bot.twilio_rest import TwilioRest

WAIT_POLL_SECS = 2.0


def add_twilio_arguments(parser: argparse.ArgumentParser) -> None:
    """``--persona``, ``--from``, ``--personas`` (shared with ``voicebot campaign``)."""
    parser.add_argument("--persona", required=True, metavar="ID", help="the persona that talks")
    parser.add_argument(
        "--from", dest="from_", default=None, metavar="+1…",
        help="caller ID, a number of your Twilio account (default: the persona's first number)",
    )  # fmt: skip
    parser.add_argument(
        "--personas", type=Path, default=None, metavar="DIR",
        help="persona folder (default: VOICEBOT_PERSONAS_DIR or config/personas)",
    )  # fmt: skip


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``dial`` arguments."""
    parser.add_argument("--to", required=True, metavar="+1…", help="the number to call (E.164)")
    add_twilio_arguments(parser)
    parser.add_argument(
        "--param", action="append", default=[], metavar="K=V",
        help="a value of the persona's custom_parameters (repeatable)",
    )  # fmt: skip
    parser.add_argument("--wait", action="store_true", help="wait for the call to end")
    parser.add_argument("--json", action="store_true", help="print JSON")


def parse_params(items: list[str]) -> dict[str, str]:
    """``k=v`` items as a mapping.

    Raises:
        ValueError: an item without ``=``.
    """
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--param: got {item!r}, expected NAME=VALUE")
        params[key] = value
    return params


def setup(personas_dir: Path | None) -> tuple[Settings, Any]:
    """The settings and the loaded personas, or SystemExit(1/2) with the reason on stderr."""
    from bot.settings import Settings, SettingsError, process_environ
    from pipelines.personas import PersonaConfigError, load_personas

    try:
        settings = Settings.from_env(personas_dir=personas_dir)
    except SettingsError as e:
        print(f"voicebot: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    if not settings.twilio_account_sid or settings.twilio_auth_token is None:
        print(
            "voicebot: TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN must be set to place calls",
            file=sys.stderr,
        )
        raise SystemExit(2)
    try:
        personas = load_personas(settings.personas_dir, process_environ())
    except (PersonaConfigError, OSError) as e:
        print(f"voicebot: personas in {settings.personas_dir}:\n{e}", file=sys.stderr)
        raise SystemExit(1) from None
    return settings, personas


def rest_client(settings: Settings, session: Any) -> TwilioRest:
    """The REST client of ``settings``' account."""
    from bot.twilio_rest import TwilioRest

    assert settings.twilio_account_sid and settings.twilio_auth_token
    return TwilioRest(
        session,
        settings.twilio_account_sid,
        settings.twilio_auth_token.get_secret_value(),
        settings.twilio_api_base_url,
    )


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Place the call; the exit status."""
    from bot.outbound.placing import (
        DialError,
        DialRequest,
        check_number,
        check_request,
        need_public_url,
    )

    out = out or sys.stdout
    try:
        params = parse_params(args.param)
        check_number(args.to, "--to")
        if args.from_ is not None:
            check_number(args.from_, "--from")
    except ValueError as e:
        print(f"voicebot dial: {e}", file=sys.stderr)
        return 2
    settings, personas = setup(args.personas)
    request = DialRequest(args.to, args.persona, args.from_, params)
    try:
        persona, from_ = check_request(request, personas)
        public_url = need_public_url(settings.public_url)
    except DialError as e:
        print(f"voicebot dial: {e}", file=sys.stderr)
        return 2
    return asyncio.run(_dial(settings, request, persona, from_, public_url, args, out))


async def _dial(
    settings: Settings,
    request: DialRequest,
    persona: Any,
    from_: str,
    public_url: str,
    args: argparse.Namespace,
    out: TextIO,
) -> int:
    import aiohttp

    from bot.outbound.placing import FINAL_STATUSES, call_form, summary
    from bot.twilio_rest import TwilioRestError

    async with aiohttp.ClientSession() as session:
        rest = rest_client(settings, session)
        try:
            call = await rest.create_call(call_form(request, persona, from_, public_url))
            _print(summary(call), args.json, out)
            if not args.wait:
                return 0
            while str(call.get("status")) not in FINAL_STATUSES:
                await asyncio.sleep(WAIT_POLL_SECS)
                call = await rest.fetch_call(str(call["sid"]))
        except TwilioRestError as e:
            print(f"voicebot dial: {e}", file=sys.stderr)
            return 1
    _print(summary(call), args.json, out)
    return 0 if call.get("status") == "completed" else 1


def _print(call: dict[str, Any], as_json: bool, out: TextIO) -> None:
    if as_json:
        print(json.dumps(call), file=out)
    else:
        answered = f" (answered by {call['answered_by']})" if call.get("answered_by") else ""
        print(f"{call['sid']}  {call['status']}{answered}", file=out)
