"""Whether the bot is speaking, as the output tells the pipeline: Bot*SpeakingFrame pairs.

Part of the output processor (``transport_output``). ``BotStartedSpeakingFrame`` and
``BotStoppedSpeakingFrame`` go both ways as Pipecat's output sends them: started before the
first chunk of speech, stopped when the writer reaches the reply's ``TTSStoppedFrame``, on an
interruption that leaves no audio, or after ``BOT_STOP_FALLBACK_SECS`` without audio.
``BotSpeakingFrame`` is not sent (its consumers are off here).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from loguru import logger
from pipecat.frames.frames import BotStartedSpeakingFrame, BotStoppedSpeakingFrame, Frame

# With speech started and no audio for this long, the bot stopped (Pipecat's fallback).
BOT_STOP_FALLBACK_SECS = 3.0


class BotSpeaking:
    """The bot's speaking state; each change broadcast once, started and stopped in pairs.

    Args:
        broadcast: The output's ``broadcast_frame`` (a frame class, sent both ways).
        label: Names the output in debug lines.
    """

    def __init__(self, broadcast: Callable[[type[Frame]], Awaitable[None]], label: str) -> None:
        self._broadcast = broadcast
        self._label = label
        self.speaking = False
        # Speech audio was written since the bot started (a TTSStoppedFrame then stops it).
        self.tts_audio_received = False
        self._lock = asyncio.Lock()

    async def started(self) -> None:
        """The bot started speaking (no-op if it is)."""
        if self.speaking:
            return
        # Started and stopped each go both ways as a pair, never interleaved (an interruption
        # can stop the bot from another task while the writer is starting it).
        async with self._lock:
            if self.speaking:
                return
            self.speaking = True
            logger.debug(f"{self._label}: bot started speaking")
            await self._broadcast(BotStartedSpeakingFrame)

    async def stopped(self) -> None:
        """The bot stopped speaking (no-op if it was not)."""
        if not self.speaking:
            return
        async with self._lock:
            if not self.speaking:
                return
            self.speaking = False
            self.tts_audio_received = False
            logger.debug(f"{self._label}: bot stopped speaking")
            await self._broadcast(BotStoppedSpeakingFrame)
