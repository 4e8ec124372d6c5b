"""The record a finished call becomes (``CallSummary``), and how numbers are masked in it.

Built at the call's end from the server's ``CallRecord``, the call's pipeline (its journal:
transcript, latencies, barge-ins; its Live API connection: handovers, reconnects) and the
counted bad input; pure data, so handing it to the writer costs nothing on the event loop.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipelines.ports import TranscriptTurn

NUMBER_MODES = ("last4", "full", "none")
# An end reason starting with one of these is a failed call (`voicebot calls list --failed`).
FAILED_REASONS = (
    "Live API",
    "internal error",
    "stream closed",
    "no media",
    "cancelled",
    "transfer failed",
    "model unresponsive",
)


def mask_number(number: str, mode: str = "last4") -> str:
    """A phone number as the records keep it.

    Args:
        number: E.164 (``+15551230123``) or whatever Twilio sent (``anonymous``, a client id).
        mode: ``last4``: the leading ``+`` and digit and the last four digits
            (``+1******0123``); ``full``: as is; ``none``: ``*`` for every character.
    """
    if mode == "full" or not number:
        return number
    if mode == "none" or len(number) <= 4:
        return "*" * len(number)
    head = 2 if number.startswith("+") else 0
    if len(number) - head <= 4:
        head = 0
    return number[:head] + "*" * (len(number) - head - 4) + number[-4:]


def is_failed(end_reason: str, rejected: bool = False) -> bool:
    """Whether a call that ended for ``end_reason`` failed (trouble, not a normal goodbye)."""
    return rejected or end_reason.startswith(FAILED_REASONS)


@dataclass(frozen=True)
class CallSummary:
    """One call's record: a ``calls`` row and its transcript (``bot.records.tables``)."""

    call_sid: str
    stream_sid: str
    persona: str
    caller: str
    called: str
    started_at: datetime
    ended_at: datetime
    duration_secs: float
    end_reason: str
    failed: bool = False
    setup_secs: float | None = None
    first_audio_secs: float | None = None
    response_p50_secs: float | None = None
    response_max_secs: float | None = None
    responses: int = 0
    barge_ins: int = 0
    handovers: int = 0
    reconnects: int = 0
    tokens: Mapping[str, int] = field(default_factory=dict)
    cost_usd: float | None = None
    bad_input: Mapping[str, int] = field(default_factory=dict)
    live_api_close: str | None = None
    transcript_kept: bool = True
    turns: tuple[TranscriptTurn, ...] = ()
    tool_calls: tuple[Any, ...] = ()  # pipelines.tools.call_tools.ToolCallRecord, in order

    def row(self) -> dict[str, Any]:
        """The ``calls`` row."""
        return {
            "call_sid": self.call_sid,
            "stream_sid": self.stream_sid,
            "persona": self.persona,
            "caller": self.caller,
            "called": self.called,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration_secs": self.duration_secs,
            "end_reason": self.end_reason[:200],
            "failed": self.failed,
            "setup_secs": self.setup_secs,
            "first_audio_secs": self.first_audio_secs,
            "response_p50_secs": self.response_p50_secs,
            "response_max_secs": self.response_max_secs,
            "responses": self.responses,
            "barge_ins": self.barge_ins,
            "handovers": self.handovers,
            "reconnects": self.reconnects,
            "prompt_tokens": self.tokens.get("prompt"),
            "response_tokens": self.tokens.get("response"),
            "tokens": dict(self.tokens) or None,
            "cost_usd": self.cost_usd,
            "bad_input": dict(self.bad_input) or None,
            "live_api_close": self.live_api_close[:200] if self.live_api_close else None,
            "transcript_kept": self.transcript_kept,
        }

    def turn_rows(self, call_id: int) -> list[dict[str, Any]]:
        """The ``transcript_turns`` rows of the call with this id."""
        return [
            {
                "call_id": call_id,
                "seq": i,
                "speaker": t.speaker,
                "at_secs": t.at_secs,
                "text": t.text,
                "interrupted": t.interrupted,
                "heard_text": t.heard_text,
                "heard_secs": t.heard_secs,
            }
            for i, t in enumerate(self.turns)
        ]

    def tool_rows(self, call_id: int) -> list[dict[str, Any]]:
        """The ``tool_calls`` rows of the call with this id (no arguments or results)."""
        return [{"call_id": call_id, "seq": i, **asdict(t)} for i, t in enumerate(self.tool_calls)]


def summarise_call(
    *,
    call_sid: str,
    stream_sid: str,
    persona: str,
    caller: str,
    called: str,
    duration_secs: float,
    end_reason: str,
    call: Any = None,
    bad_input: Mapping[str, int] | None = None,
    numbers: str = "last4",
    cost_usd: float | None = None,
) -> CallSummary:
    """A finished call's record.

    Args:
        call_sid: Twilio's call SID.
        stream_sid: Twilio's stream SID.
        persona: The persona id.
        caller: The caller's number, unmasked (masked here by ``numbers``).
        called: The number called, unmasked.
        duration_secs: From the stream's start to its end.
        end_reason: Why the call ended.
        call: The call's ``CallPipeline`` (journal, connection counters, setup time); None
            when the call failed before its pipeline was built.
        bad_input: Protocol errors by kind (the pre-start junk and the serializer's counts).
        numbers: How numbers are masked (``mask_number``).
        cost_usd: The estimated cost, if known.
    """
    ended = datetime.now(UTC)
    started = datetime.fromtimestamp(time.time() - duration_secs, UTC)
    figures: dict[str, Any] = {}
    turns: tuple[TranscriptTurn, ...] = ()
    kept = True
    rejection = None
    if call is not None:
        journal = call.journal
        turns = tuple(journal.finish())
        kept = journal.keep_text
        samples = journal.response_secs
        conn = call.llm.connection
        handovers = int(getattr(conn, "handovers", 0))
        connections = int(getattr(conn, "connections", 0))
        rejection = call.rejection
        figures = {
            "setup_secs": _r(call.setup_secs),
            "first_audio_secs": _r(journal.first_audio_secs),
            "response_p50_secs": _r(statistics.median(samples)) if samples else None,
            "response_max_secs": _r(max(samples)) if samples else None,
            "responses": len(samples),
            "barge_ins": journal.barge_ins,
            "handovers": handovers,
            "reconnects": max(0, connections - 1 - handovers),
            "tokens": dict(journal.tokens),
            "tool_calls": tuple(getattr(getattr(call, "http_tools", None), "records", ())),
        }
    close = None
    if rejection is not None:
        code, reason = rejection
        close = f"{code} {reason}" if code else reason
    return CallSummary(
        call_sid=call_sid,
        stream_sid=stream_sid,
        persona=persona,
        caller=mask_number(caller, numbers),
        called=mask_number(called, numbers),
        started_at=started,
        ended_at=ended,
        duration_secs=round(duration_secs, 3),
        end_reason=end_reason,
        failed=is_failed(end_reason, rejection is not None),
        bad_input=dict(bad_input or {}),
        live_api_close=close,
        transcript_kept=kept,
        turns=turns,
        cost_usd=cost_usd,
        **figures,
    )


def _r(secs: float | None) -> float | None:
    return None if secs is None else round(secs, 4)


def call_cost(call: Any) -> float | None:
    """The call's estimated cost from its metrics recorder (``bot.metrics``); None if unpriced."""
    usd = getattr(getattr(call, "metrics", None), "cost_usd", None)
    return round(float(usd), 6) if isinstance(usd, int | float) and usd > 0 else None


def summary_of(
    info: Any,
    persona: str,
    duration_secs: float,
    end_reason: str,
    call: Any,
    bad_input: Mapping[str, int],
    numbers: str,
) -> CallSummary:
    """The record of a call that just ended, from what ``bot.media_stream`` holds at its end.

    Built once per call and shared by the records writer and the post-call webhook.
    """
    return summarise_call(
        call_sid=info.call_sid,
        stream_sid=info.stream_sid,
        persona=persona,
        caller=info.caller,
        called=info.called,
        duration_secs=duration_secs,
        end_reason=end_reason,
        call=call,
        bad_input=bad_input,
        numbers=numbers,
        cost_usd=call_cost(call),
    )
