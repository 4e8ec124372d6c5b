"""``voicebot call``: place one simulated Twilio call and print what the caller experienced."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``call`` command's arguments."""
    parser.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--persona", help="persona id, sent as ?persona=ID on the webhook URL")
    parser.add_argument(
        "--say",
        action="append",
        metavar="WAV",
        help="utterance(s) to say in turn, each followed by waiting for the reply "
        "(default: caller_question.wav; names are also looked up in sim/assets)",
    )
    parser.add_argument(
        "--barge-in-after",
        type=float,
        metavar="SECS",
        help="after the last utterance, talk over the reply once SECS of it have played",
    )
    parser.add_argument("--dtmf", metavar="DIGITS", help="press these keys after the greeting")
    parser.add_argument("--record", metavar="OUT.wav", help="write what the caller heard")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    parser.add_argument("--auth-token", help="sign the webhook and the stream upgrade")
    parser.add_argument("--to", default="+15005550006", help="the dialled number")
    parser.add_argument("--from", dest="from_", default="+15005550001", help="the caller")
    parser.add_argument(
        "--hangup-after", type=float, default=60.0, metavar="SECS", help="hard call length limit"
    )
    parser.add_argument(
        "--timeout", type=float, default=15.0, metavar="SECS", help="wait limit per step"
    )
    add_line_arguments(parser)


def _level_or_off(text: str) -> float | str:
    """A level in dB or ``"off"`` (None stays "not given": the scenario's or the default)."""
    from sim.caller.line_noise import parse_dbfs

    level = parse_dbfs(text)
    return "off" if level is None else level


def add_line_arguments(parser: argparse.ArgumentParser) -> None:
    """The caller's line: ``--line-noise-dbfs``, ``--line-noise-color``, ``--echo-db``, delay."""
    from sim.caller.line_noise import (
        DEFAULT_LINE_NOISE_COLOR,
        DEFAULT_LINE_NOISE_DBFS,
        NOISE_COLORS,
    )
    from sim.caller.plan import DEFAULT_PLAYOUT_DELAY_SECS, DEFAULT_STREAM_CONNECT_SECS

    default = "off" if DEFAULT_LINE_NOISE_DBFS is None else f"{DEFAULT_LINE_NOISE_DBFS:g}"
    line = parser.add_argument_group("the caller's line")
    line.add_argument(
        "--line-noise-dbfs",
        type=_level_or_off,
        metavar="DBFS|off",
        help=f"line noise RMS level between and under the caller's words (default {default}; "
        "the scenario's line_noise in a load test); off: digital silence",
    )
    line.add_argument(
        "--line-noise-color",
        choices=NOISE_COLORS,
        help=f"line noise spectrum (default {DEFAULT_LINE_NOISE_COLOR})",
    )
    line.add_argument(
        "--echo-db",
        type=_level_or_off,
        metavar="DB|off",
        help="mix the bot's audio back into what the caller sends, this many dB below the "
        "bot as heard and 40 ms later, like a handset leaking it (e.g. 30; default off)",
    )
    line.add_argument(
        "--playout-delay-ms",
        type=float,
        metavar="MS",
        help="Twilio's buffering before received audio is heard; latencies run to when it is "
        f"heard (default {DEFAULT_PLAYOUT_DELAY_SECS * 1000:g})",
    )
    line.add_argument(
        "--stream-connect-ms",
        type=float,
        metavar="MS",
        help="Twilio's delay from reading the TwiML to the stream's start (default "
        f"{DEFAULT_STREAM_CONNECT_SECS * 1000:g}; the scenario's stream_connect_ms); 0: at once",
    )


def line_from_args(args: argparse.Namespace) -> tuple[Any, float]:
    """The default line with the flags of :func:`add_line_arguments` applied.

    Returns:
        ``(LineNoiseSpec, playout delay in ms)``.

    Raises:
        LineError: a value out of range (a ValueError; the message says what is expected).
    """
    from sim.caller.line_spec import LineNoiseSpec, override_line
    from sim.caller.plan import DEFAULT_PLAYOUT_DELAY_SECS

    return override_line(
        LineNoiseSpec(), DEFAULT_PLAYOUT_DELAY_SECS * 1000, args.line_noise_dbfs,
        args.line_noise_color, args.echo_db, args.playout_delay_ms,
    )  # fmt: skip


def build_plan(args: argparse.Namespace) -> Any:
    """The plan the flags describe: greeting, [dtmf], each utterance + reply, [barge-in]."""
    from sim.caller.plan import CallPlan

    spec, delay_ms = line_from_args(args)
    plan = CallPlan(
        hangup_after_secs=args.hangup_after,
        line_noise=spec.line(),
        playout_delay_secs=delay_ms / 1000,
    )
    if args.stream_connect_ms is not None:
        plan.stream_connect_secs = max(0.0, args.stream_connect_ms / 1000)
    plan.wait_for_greeting(timeout_secs=args.timeout)
    if args.dtmf:
        plan.dtmf(args.dtmf)
    for wav in args.say or ["caller_question.wav"]:
        plan.say(wav)
        if args.barge_in_after is None:
            plan.wait_for_reply(timeout_secs=args.timeout)
    if args.barge_in_after is not None:
        plan.barge_in(args.barge_in_after, timeout_secs=args.timeout)
        plan.wait_for_reply(timeout_secs=args.timeout)
    return plan.hangup()


def format_timeline(d: dict[str, Any]) -> str:
    """Human-readable timeline and figures of one call result dict."""
    from sim.caller.line_noise import describe_line

    lines = [f"call {d['call_sid']}  custom parameters {d['custom_parameters']}"]
    lines.append(f"line: {describe_line(d['line'])}" if d.get("line") else "line: -")
    lines += [f"  t=+{e['t']:7.3f} s  {e['kind']:<9} {e['detail']}" for e in d["events"]]

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f} ms"

    def many(vs: list[float]) -> str:
        return ", ".join(f"{v:.0f}" for v in vs) + " ms" if vs else "-"

    lines += [
        f"setup (webhook -> start)        {ms(d['setup_ms'])}",
        f"time to greeting as heard       {ms(d['setup_to_audio_ms'])}",
        f"greeting after stream start     {ms(d['greeting_ms'])}",
        f"response latency                {many(d['response_latencies_ms'])}"
        f"  (missed {d['replies_missed']}, talk-overs {d['talkovers']})",
        f"barge-in -> clear               {many(d['bargein_to_clear_ms'])}"
        f"  (barge-ins {d['bargeins']}, unanswered {d['bargeins_unanswered']})",
        f"barge-in -> silence             {many(d['bargein_to_silence_ms'])}",
        f"clears / stale frames           {d['clears']} / {d['stale_frames']}",
        f"gaps (underruns in replies)     {len(d['gaps_ms'])}, max {d['gap_max_ms']:.0f} ms; "
        f"inter-arrival p99 {ms(d['interarrival_p99_ms'])}, max {ms(d['interarrival_max_ms'])}",
        f"dead air (longest wait)         {d.get('dead_air_secs', 0.0):.2f} s"
        + _waits(d.get("dead_air") or []),
        f"audio received / played / cleared  {d['audio_received_secs']:.2f} / "
        f"{d['audio_played_secs']:.2f} / {d['audio_cleared_secs']:.2f} s",
        f"generator send lateness max     {d['send_lateness_max_ms']:.1f} ms",
        f"protocol errors (Twilio drops)  {_counts(d.get('protocol_errors') or {})}",
        f"ended: {d['end_reason']}",
        "result: OK" if d["ok"] else f"result: FAILED ({d['failure']})",
    ]
    return "\n".join(lines)


def _waits(waits: list[dict[str, Any]]) -> str:
    """The dead-air waits of a second or more, as ``t=+S (kind) SECS s``."""
    long = [w for w in waits if w["secs"] >= 1.0]
    parts = [f"t=+{w['t']:.2f} ({w['kind']}) {w['secs']:.2f} s" for w in long]
    return "; " + ", ".join(parts) if parts else ""


def _counts(by_kind: dict[str, int]) -> str:
    if not by_kind:
        return "none"
    return ", ".join(f"{k} x{n}" for k, n in sorted(by_kind.items()))


def run(args: argparse.Namespace) -> int:
    """Place the call; exit 0 when it completed, 1 when it failed, 2 on bad arguments."""
    import asyncio

    from sim.caller.driver import place_call

    try:
        plan = build_plan(args)
    except (FileNotFoundError, ValueError) as e:  # LineError is a ValueError
        print(f"voicebot call: {e}", file=sys.stderr)
        return 2
    result = asyncio.run(
        place_call(
            args.url,
            plan,
            auth_token=args.auth_token,
            record=args.record,
            to=args.to,
            from_=args.from_,
            persona=args.persona,
        )
    )
    d = result.to_dict()
    print(json.dumps(d, indent=2) if args.json else format_timeline(d))
    return 0 if result.ok else 1
