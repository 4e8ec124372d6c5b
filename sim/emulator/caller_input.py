"""What a session does with the caller's input: audio, activity markers, text and turns.

``realtimeInput`` audio goes through the session's automatic VAD (``vad.TurnDetector``), or is
collected between ``activityStart`` and ``activityEnd`` when the setup disabled it; a caller
turn is counted in the conversation, transcribed when asked, and answered (``LiveSession``'s
replies, tool scripts and misbehaviours). ``clientContent`` text counts towards the context and
a ``turnComplete`` starts a reply. Functions take the ``LiveSession`` (``session``) they serve,
as ``wire`` and ``tools`` do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from loguru import logger

from sim.emulator import protocol as p
from sim.emulator import wire
from sim.emulator.vad import TurnDetector

if TYPE_CHECKING:
    from sim.emulator.session import LiveSession

NUDGE_WINDOW_SECS = 2.0


async def on_realtime(s: LiveSession, body: dict[str, Any]) -> None:
    """One ``realtimeInput`` message: audio chunks, activity markers, stream end, text."""
    audio = body.get("audio")
    if audio is not None:
        await on_audio(s, audio)
        if len(body) == 1:  # the hot path: one audio chunk
            return
    for chunk in p.get(body, "media_chunks", "mediaChunks") or ():
        await on_audio(s, chunk)
    if p.get(body, "activity_start", "activityStart") is not None:
        await on_activity_start(s)
    if p.get(body, "activity_end", "activityEnd") is not None:
        await on_activity_end(s)
    if p.get(body, "audio_stream_end", "audioStreamEnd") and s._vad and s._vad.flush():
        await caller_turn(s, s._vad.finished, s._vad.rate_hz)
    text = body.get("text")
    if text is not None:
        await on_text(s, str(text))


async def on_audio(s: LiveSession, blob: dict[str, Any]) -> None:
    """One audio blob: fed to the VAD (a barge-in, a turn's end) or kept for a manual turn."""
    mime = blob.get("mime_type") or blob.get("mimeType") or ""
    if not mime.startswith("audio/"):
        return
    pcm = p.b64decode(blob.get("data") or "")
    rate = p.mime_rate(mime)
    vad = s._vad
    if vad is None or vad.rate_hz != rate:
        assert s.info is not None
        if s.info.vad.disabled:
            if s._manual_active:
                s._manual.append(pcm)
                s._manual_rate = rate
            return
        vad = s._vad = TurnDetector(s.info.vad, rate)
    events = vad.feed(pcm)
    if events.started:
        busy = s._pending_tools or (s._reply_task and not s._reply_task.done())
        if busy and s._misb.happens("missed_bargein", s.conv.caller_turns):
            logger.debug("emulator {}: fault: barge-in missed", s.id)
        else:
            await s._barge_in()
    if events.ended:
        await caller_turn(s, vad.finished, rate)


async def on_activity_start(s: LiveSession) -> None:
    """``activityStart``: a manual turn begins (ignored while automatic VAD is on)."""
    assert s.info is not None
    if not s.info.vad.disabled:
        logger.debug("emulator {}: activityStart ignored: automatic VAD is on", s.id)
        return
    s._manual_active, s._manual = True, []
    await s._barge_in()


async def on_activity_end(s: LiveSession) -> None:
    """``activityEnd``: the manual turn's audio is one caller turn."""
    if not s._manual_active:
        return
    s._manual_active = False
    pcm = b"".join(s._manual)
    s._manual = []
    await caller_turn(s, np.frombuffer(pcm[: len(pcm) & ~1], "<i2"), s._manual_rate)


async def on_text(s: LiveSession, text: str) -> None:
    """``realtimeInput.text``: a caller turn in text, or Pipecat's blank nudge."""
    if not text.strip():
        # Pipecat nudges 3.x models with " " right after a clientContent turnComplete.
        busy = s._reply_task is not None and not s._reply_task.done()
        if busy or s._loop.time() - s._last_trigger < NUDGE_WINDOW_SECS:
            return
        s._start_reply(s._audio("greeting"))
        return
    await s._barge_in()
    s.conv.caller_turns += 1
    s.conv.context_text_tokens += len(text) // 4 + 1
    s.conv.history.append(f"caller: [text {len(text)} chars]")
    s._reply_to_turn(s._audio("greeting"))


async def on_client_content(s: LiveSession, body: dict[str, Any]) -> None:
    """``clientContent``: history counted in the context; ``turnComplete`` starts a reply."""
    wire.check_client_content(s)
    for turn in body.get("turns") or ():
        for part in turn.get("parts") or () if isinstance(turn, dict) else ():
            s.conv.context_text_tokens += (len(str(part.get("text", ""))) + 3) // 4
    if p.get(body, "turn_complete", "turnComplete"):
        await s._barge_in(force=True)
        s._start_reply(s._audio("greeting"))


async def caller_turn(s: LiveSession, samples: np.ndarray | None, rate: int) -> None:
    """A finished caller turn of ``samples``: counted, transcribed if asked, answered."""
    assert s.info is not None
    if samples is None:
        return
    secs = samples.size / rate
    label = f"[caller audio {secs:.2f} s]"
    s.conv.caller_turns += 1
    s.conv.context_audio_secs += secs
    s.conv.history.append(f"caller: {label}")
    if s.info.input_transcription:
        now, s._pending_input = wire.input_transcript(s.info.model, s._pending_input, label)
        for message in now:
            await s.send(message)
    s._reply_to_turn(s._audio("answer", samples, rate))
