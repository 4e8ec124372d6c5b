"""Tool calls like the real model's: an announcement first, cancellation, response scheduling.

The rules (announce, ``NON_BLOCKING`` and ``scheduling``, ``toolCallCancellation``) are
documented on `sim.emulator.config.ToolScript`.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import TYPE_CHECKING, Any

from loguru import logger

from sim.emulator import protocol as p
from sim.emulator import voices
from sim.emulator.config import ToolScript

if TYPE_CHECKING:
    from sim.emulator.session import LiveSession

SCHEDULINGS = ("SILENT", "WHEN_IDLE", "INTERRUPT")
_SENTENCE = re.compile(r"[^.!?\n]+")


def _get(obj: Any, snake: str, camel: str) -> Any:
    if not isinstance(obj, dict):
        return None
    value = obj.get(snake)
    return obj.get(camel) if value is None else value


def system_text(raw_setup: dict[str, Any]) -> str:
    """The text of the setup's system instruction."""
    content = _get(raw_setup, "system_instruction", "systemInstruction")
    if isinstance(content, str):
        return content
    parts = _get(content, "parts", "parts") or []
    return "\n".join(str(part.get("text", "")) for part in parts if isinstance(part, dict))


def announces(raw_setup: dict[str, Any], name: str) -> bool:
    """Whether the instructions make the model speak before calling ``name``.

    True when a sentence of the system instruction names the function and says "before".
    """
    for sentence in _SENTENCE.findall(system_text(raw_setup)):
        words = sentence.lower()
        if name.lower() in words and re.search(r"\bbefore\b", words):
            return True
    return False


def declaration(raw_setup: dict[str, Any], name: str) -> dict[str, Any]:
    """The setup's function declaration named ``name`` (empty if none)."""
    for tool in _get(raw_setup, "tools", "tools") or []:
        for fd in _get(tool, "function_declarations", "functionDeclarations") or []:
            if isinstance(fd, dict) and fd.get("name") == name:
                return fd
    return {}


def non_blocking(raw_setup: dict[str, Any], name: str) -> bool:
    """Whether ``name`` was declared ``NON_BLOCKING``."""
    return str(declaration(raw_setup, name).get("behavior") or "") == "NON_BLOCKING"


def scheduling_of(response: dict[str, Any]) -> str:
    """A function response's ``scheduling`` (``WHEN_IDLE`` when absent, as documented)."""
    value = str(response.get("scheduling") or "WHEN_IDLE").upper()
    return value if value in SCHEDULINGS else "WHEN_IDLE"


def cancellation(ids: list[str]) -> bytes:
    """``toolCallCancellation`` for these call ids."""
    return p.encode({"toolCallCancellation": {"ids": ids}})


async def run_tool_call(
    session: LiveSession, script: ToolScript, answer: voices.ReplyAudio | None
) -> None:
    """The body of a tool turn.

    The announcement if any, the ``toolCall``, and for a ``NON_BLOCKING`` function the turn's
    ordinary answer.
    """
    assert session.info is not None
    raw = session.info.raw
    speak = script.announce if script.announce is not None else announces(raw, script.name)
    if speak:
        await _announce(session)
    call_id = f"fc-{session.id}-{session._replies_started}"
    session._pending_tools[call_id] = script.name
    await session.send(p.tool_call(call_id, script.name, dict(script.args)))
    if answer is not None and non_blocking(raw, script.name):
        await session._stream(answer, False)


async def _announce(session: LiveSession) -> None:
    """Speak a short announcement: audio, no ``turnComplete`` (the turn waits for the tool)."""
    cfg = session.cfg
    assert session.info is not None
    audio = voices.wav_reply(cfg.greeting_wav, cfg.chunk_ms, cfg.announce_secs)
    session._streaming, session._sent_secs = True, 0.0
    if session.info.output_transcription:
        await session.send(p.transcription("outputTranscription", audio.label))
    loop = asyncio.get_running_loop()
    start = loop.time()
    burst = max(1, cfg.burst_ms // cfg.chunk_ms)
    for i, message in enumerate(audio.messages, 1):
        await session.send(message)
        session._sent_secs = min(audio.secs, i * audio.chunk_secs)
        if cfg.pace and i % burst == 0:
            await asyncio.sleep(max(0.0, start + i * audio.chunk_secs / cfg.pace - loop.time()))
    session._streaming = False
    session.conv.context_audio_secs += audio.secs
    session.conv.history.append(f"model: [audio {audio.secs:.2f} s, then a tool call]")


async def on_tool_response(session: LiveSession, body: dict[str, Any]) -> None:
    """Answer a ``toolResponse``: at once for ``BLOCKING`` calls, by ``scheduling`` otherwise.

    A response to an id that is not pending (unknown, or cancelled) is ignored.
    """
    assert session.info is not None
    responses = [r for r in p.get(body, "function_responses", "functionResponses") or []
                 if isinstance(r, dict)]  # fmt: skip
    pending = session._pending_tools
    answered = [r for r in responses if r.get("id") in pending]
    if not answered:
        logger.debug("emulator {}: toolResponse for no pending call", session.id)
        return
    names = [pending.pop(str(r.get("id"))) for r in answered]
    session.conv.context_text_tokens += len(json.dumps(answered)) // 4
    raw = session.info.raw
    schedulings = {scheduling_of(r) for r in answered}
    if not all(non_blocking(raw, name) for name in names):
        schedulings = {"BLOCKING"}
    if schedulings == {"SILENT"}:
        task = session._reply_task
        if task is None or task.done():
            await session._send_resumption()  # nothing said; idle again
        return
    if "INTERRUPT" in schedulings:
        await session._barge_in(force=True, cancel_tools=False)
    # BLOCKING: the model was waiting, so this is the next thing it says; WHEN_IDLE: it waits
    # for the reply in progress (replies run one after the other).
    session._start_reply(session._audio("goodbye"), after_tool=True)
