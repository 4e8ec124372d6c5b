"""Live API transcripts and usage as Pipecat frames and metrics, as Pipecat's service made them.

- The caller's words (``inputTranscription``) arrive as fragments; they are joined into
  sentences (``match_endofsentence``), each pushed upstream as a ``TranscriptionFrame`` for the
  user aggregator; a fragment with no sentence end is flushed after ``CALLER_FLUSH_SECS``.
- The bot's words (``outputTranscription``) go downstream as an ``LLMTextFrame`` that is not
  added to the context (for observers) and a ``TTSTextFrame`` (the assistant aggregator adds
  it to the context).
- ``token_usage``: ``usageMetadata`` as ``LLMTokenUsage`` (tool-result prompts count as input,
  thinking as output); ``usage_by_kind``: the same counts by kind for the call's record.
- ``Transcripts.listener`` (``pipelines.ports.TranscriptListener``): every caller sentence,
  bot fragment and usage also goes there (the call's journal, ``pipelines.call.journal``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from google.genai.types import (
    LiveServerMessage,
    MediaModality,
    ModalityTokenCount,
    UsageMetadata,
)
from pipecat.frames.frames import LLMTextFrame, TextType, TranscriptionFrame, TTSTextFrame
from pipecat.metrics.metrics import LLMTokenUsage
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.utils.string import match_endofsentence
from pipecat.utils.time import time_now_iso8601

from pipelines.ports import TranscriptListener

# A caller fragment with no sentence end is pushed after this long without another.
CALLER_FLUSH_SECS = 0.5


class Transcripts:
    """Pushes one call's transcript frames through ``processor`` (see the module docstring)."""

    def __init__(self, processor: FrameProcessor) -> None:
        self._processor = processor
        self._caller = ""
        self._flush_task: asyncio.Task[None] | None = None
        self.listener: TranscriptListener | None = None

    async def caller(self, text: str, message: LiveServerMessage | None) -> None:
        """A fragment of the caller's words."""
        self._cancel_flush()
        if text.startswith(" ") and not self._caller:
            text = text.lstrip()
        self._caller += text
        while end := match_endofsentence(self._caller):
            sentence, self._caller = self._caller[:end], self._caller[end:]
            await self._push_caller(sentence, message)
        if self._caller:
            self._flush_task = asyncio.create_task(self._flush_later(), name="transcript-flush")

    async def bot(self, text: str) -> None:
        """A fragment of the bot's words."""
        if self.listener is not None:
            self.listener.bot_said(text)
        llm_text = LLMTextFrame(text)
        llm_text.append_to_context = False
        await self._processor.push_frame(llm_text)
        tts_text = TTSTextFrame(text, text_type=TextType.SENTENCE)
        tts_text.includes_inter_frame_spaces = True
        await self._processor.push_frame(tts_text)

    def usage(self, usage: UsageMetadata | Any) -> None:
        """A ``usageMetadata``: to the listener, by kind."""
        if self.listener is not None:
            self.listener.model_usage(usage_by_kind(usage))

    def close(self) -> None:
        """Stop the flush timer."""
        self._cancel_flush()

    def _cancel_flush(self) -> None:
        task, self._flush_task = self._flush_task, None
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()

    async def _flush_later(self) -> None:
        await asyncio.sleep(CALLER_FLUSH_SECS)
        if self._caller:
            sentence, self._caller = self._caller, ""
            await self._push_caller(sentence, None)

    async def _push_caller(self, text: str, message: Any) -> None:
        if self.listener is not None:
            self.listener.caller_said(text)
        frame = TranscriptionFrame(
            text=text, user_id="", timestamp=time_now_iso8601(), result=message
        )
        await self._processor.push_frame(frame, FrameDirection.UPSTREAM)


def _audio_tokens(details: list[ModalityTokenCount] | None) -> int | None:
    for entry in details or ():
        if entry.modality == MediaModality.AUDIO:
            return entry.token_count
    return None


def token_usage(usage: UsageMetadata | Any) -> LLMTokenUsage:
    """``usageMetadata`` as Pipecat's ``LLMTokenUsage``."""
    prompt = (usage.prompt_token_count or 0) + (usage.tool_use_prompt_token_count or 0)
    completion = (usage.response_token_count or 0) + (usage.thoughts_token_count or 0)
    return LLMTokenUsage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cache_read_input_tokens=usage.cached_content_token_count,
        reasoning_tokens=usage.thoughts_token_count,
        input_audio_tokens=_audio_tokens(usage.prompt_tokens_details),
        output_audio_tokens=_audio_tokens(usage.response_tokens_details),
        cache_read_input_audio_tokens=_audio_tokens(usage.cache_tokens_details),
    )


def usage_by_kind(usage: UsageMetadata | Any) -> dict[str, int]:
    """``usageMetadata`` counts by kind (absent counts are left out).

    Kinds: prompt, response, thoughts, tool_prompt, cached, and the audio parts of the prompt
    and the response (prompt_audio, response_audio).
    """
    counts = {
        "prompt": usage.prompt_token_count,
        "response": usage.response_token_count,
        "thoughts": usage.thoughts_token_count,
        "tool_prompt": usage.tool_use_prompt_token_count,
        "cached": usage.cached_content_token_count,
        "prompt_audio": _audio_tokens(usage.prompt_tokens_details),
        "response_audio": _audio_tokens(usage.response_tokens_details),
    }
    return {k: int(v) for k, v in counts.items() if v}
