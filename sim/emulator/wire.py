"""Per-model wire rules of the emulated service, from the shared model table.

The rules are ``ModelSpec`` fields in ``pipelines/gemini_models.py`` (persona validation and the
server read the same table):

- ``mid_session_client_content`` false (3.1): ``clientContent`` only as the initial history
  (`client_content_refusal`); afterwards the session closes 1007.
- ``null_resumption_handle`` false (3.1): checked at setup (``schema.validate_setup``).
- ``bundled_messages`` (3.x): several 80 ms parts per message, transcript fragments in the same
  message, the caller's transcript in the reply's first messages, ``generationComplete`` and
  ``turnComplete`` with ``usageMetadata`` in the last audio message. 2.5: one part per
  message, transcript fragments in messages of their own after the audio they describe.
- ``usage_only_messages`` (3.x): a message with only ``usageMetadata`` before a reply's audio
  and in the middle of a long one.

Transcripts are placeholders cut into fragments of a few words (`fragments`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipelines.gemini_models import ModelSpec
from sim.emulator import protocol as p
from sim.emulator.schema import INVALID_ARGUMENT, Rejection
from sim.emulator.voices import ReplyAudio

if TYPE_CHECKING:
    from sim.emulator.session import LiveSession

# 80 ms parts per message on bundling models (240 ms of audio a message).
BUNDLE_PARTS = 3
# Words per transcript fragment.
FRAGMENT_WORDS = 2
# A reply with more bundled messages than this gets a usage-only message in its middle too.
MID_USAGE_AFTER_MESSAGES = 4


def fragments(text: str, words: int = FRAGMENT_WORDS) -> list[str]:
    """``"[bot audio 3.87 s]"`` -> ``["[bot audio", " 3.87 s]"]`` (joined, the text again)."""
    pieces = text.split(" ")
    return [
        ("" if i == 0 else " ") + " ".join(pieces[i : i + words])
        for i in range(0, len(pieces), words)
    ]


def client_content_refusal(
    spec: ModelSpec, *, history_in_client_content: bool, realtime_seen: bool, model_spoke: bool
) -> Rejection | None:
    """The close a ``clientContent`` message gets now, or None when it is accepted.

    Models without ``mid_session_client_content`` take it only as the initial history: the
    setup asked for ``historyConfig.initial_history_in_client_content``, and neither a
    ``realtimeInput`` nor any model output has happened on the session yet.
    """
    if spec.mid_session_client_content:
        return None
    if not history_in_client_content:
        detail = "clientContent without historyConfig.initial_history_in_client_content"
    elif realtime_seen or model_spoke:
        detail = "mid-session clientContent (after realtimeInput or model output)"
    else:
        return None
    return Rejection(1007, INVALID_ARGUMENT, f"{spec.name}: {detail}; send realtimeInput.text")


def check_client_content(session: LiveSession) -> None:
    """Close ``session`` (raise) if its model refuses a ``clientContent`` message now."""
    info = session.info
    assert info is not None
    refusal = client_content_refusal(
        info.model,
        history_in_client_content=info.history_in_client_content,
        realtime_seen=session._realtime_seen,
        model_spoke=session._streaming or session.conv.replies > 0,
    )
    if refusal is not None:
        raise refusal


@dataclass(frozen=True)
class Step:
    """One server message of a reply.

    Attributes:
        message: The encoded message.
        chunks: Audio chunks sent once this message is out.
        secs: Audio seconds sent once this message is out.
        final: It carries ``turnComplete`` (the reply is over once it is sent).
    """

    message: bytes
    chunks: int
    secs: float
    final: bool = False


def _due(n_fragments: int, n_slots: int) -> list[int]:
    """For each fragment, the slot (0-based) whose audio it describes: alongside or after."""
    return [min(n_slots - 1, -(-(k + 1) * n_slots // n_fragments) - 1) for k in range(n_fragments)]


def reply_steps(
    audio: ReplyAudio,
    spec: ModelSpec,
    *,
    output_transcription: bool,
    input_text: str | None,
    after_tool: bool,
    prompt_usage: Callable[[], dict[str, Any]],
    final_usage: Callable[[], dict[str, Any]],
    end_turn: bool = True,
) -> Iterator[Step]:
    """The messages of one reply, in order, shaped by the model's wire rules.

    Args:
        audio: The reply's audio.
        spec: The session's model.
        output_transcription: The setup asked for output transcription.
        input_text: The caller's transcript still to send (bundling models), or None.
        after_tool: The reply follows a tool response (an empty transcript comes first).
        prompt_usage: ``usageMetadata`` of the prompt, for usage-only messages.
        final_usage: Called once, just before the message with ``turnComplete`` is built
            (bundling models only: the caller then owes no ``turnComplete``).
        end_turn: False for audio that does not end the turn (an announcement before a tool
            call): no ``generationComplete``, ``turnComplete`` or usage in the last message.
    """
    if after_tool and output_transcription:
        yield Step(p.transcription("outputTranscription", ""), 0, 0.0)
    parts = [p.chunk_part(m) for m in audio.messages] if spec.bundled_messages else []
    out = fragments(audio.label) if output_transcription else []
    if not spec.bundled_messages:
        yield from _one_part_steps(audio, out)
        return
    if spec.usage_only_messages:
        yield Step(p.usage_only(prompt_usage()), 0, 0.0)
    groups = max(1, -(-len(parts) // BUNDLE_PARTS))
    due = _due(len(out), groups) if out else []
    heard = fragments(input_text) if input_text else []
    for g in range(groups):
        first, last = g * BUNDLE_PARTS, min(len(parts), (g + 1) * BUNDLE_PARTS)
        fields: dict[str, Any] = {}
        final = end_turn and g == groups - 1
        said = heard[g : g + 1] if g < groups - 1 else heard[g:]
        if said:
            fields["inputTranscription"] = {"text": "".join(said)}
        text = "".join(f for f, slot in zip(out, due, strict=True) if slot == g)
        if text:
            fields["outputTranscription"] = {"text": text}
        usage_body = None
        if final:
            fields["generationComplete"] = True
            fields.update(p.TURN_COMPLETE_FIELDS)
            usage_body = final_usage()
        secs = min(audio.secs, last * audio.chunk_secs)
        yield Step(p.server_content(parts[first:last], fields, usage_body), last, secs, final)
        if spec.usage_only_messages and groups > MID_USAGE_AFTER_MESSAGES and g == groups // 2:
            yield Step(p.usage_only(prompt_usage()), last, secs)


def _one_part_steps(audio: ReplyAudio, out: list[str]) -> Iterator[Step]:
    n = len(audio.messages)
    due = _due(len(out), n) if out and n else []
    k = 0
    for i, message in enumerate(audio.messages):
        secs = min(audio.secs, (i + 1) * audio.chunk_secs)
        yield Step(message, i + 1, secs)
        while k < len(out) and due[k] == i:
            yield Step(p.transcription("outputTranscription", out[k]), i + 1, secs)
            k += 1
    for text in out[k:]:  # a reply with no audio
        yield Step(p.transcription("outputTranscription", text), n, audio.secs)


def input_transcript_messages(text: str) -> list[bytes]:
    """The caller's transcript as fragment messages of their own (the 2.5 shape)."""
    return [p.transcription("inputTranscription", f) for f in fragments(text)]


def input_transcript(
    spec: ModelSpec, pending: str | None, text: str
) -> tuple[list[bytes], str | None]:
    """What to send now for a caller turn's transcript, and what the next reply carries.

    2.5: fragment messages now, before the reply. 3.x: nothing now; the reply's first
    messages carry it. A transcript still pending from a turn whose reply never streamed
    (a tool call, a barge-in) goes out now.
    """
    now = input_transcript_messages(pending) if pending is not None else []
    if spec.bundled_messages:
        return now, text
    return now + input_transcript_messages(text), None


async def stream_reply(session: LiveSession, audio: ReplyAudio, after_tool: bool) -> None:
    """Send one reply on ``session``, shaped by its model's rules, at the configured pace."""
    assert session.info is not None
    info, cfg, faults, loop = session.info, session.cfg, session.emu.faults, session._loop
    session._streaming, session._sent_secs = True, 0.0
    input_text, session._pending_input = session._pending_input, None

    def final_usage() -> dict[str, Any]:
        session._finish_reply_bookkeeping(audio.secs, interrupted=False)
        return session._usage(audio.secs)

    steps = reply_steps(
        audio,
        info.model,
        output_transcription=info.output_transcription,
        input_text=input_text,
        after_tool=after_tool,
        prompt_usage=lambda: session._usage(0.0, count=False),
        final_usage=final_usage,
    )
    burst = max(1, cfg.burst_ms // cfg.chunk_ms)
    start = loop.time()
    stalled = faults.stall_after is None
    paced = 0
    finished = False
    for step in steps:
        if step.final:
            session._streaming, finished = False, True  # turnComplete rides in this message
        await session.send(step.message)
        session._sent_secs = step.secs
        if not stalled and session._sent_secs >= (faults.stall_after or 0.0):
            stalled = True
            await asyncio.sleep(faults.stall_secs)
            start += faults.stall_secs
        if step.chunks // burst > paced:
            paced = step.chunks // burst
            ahead = start + session._sent_secs / cfg.pace - loop.time() if cfg.pace else 0
            await asyncio.sleep(max(0.0, ahead))
    if not finished:
        await session.send(p.GENERATION_COMPLETE)
        if cfg.wait_playback:
            await asyncio.sleep(max(0.0, start + audio.secs - loop.time()))
        session._streaming = False
        session._finish_reply_bookkeeping(audio.secs, interrupted=False)
        await session.send(session._turn_complete(audio.secs))
    await session._send_resumption()
