"""Call control: the built-in tools, call limits, the greeting grace and an ordered hang-up.

- ``end_call``: the model says goodbye; once the goodbye has been played, the call is hung up
  through the REST API (when credentials are set) and the stream closes normally.
- ``transfer_call``: an optional announcement, then the call's TwiML is replaced by a ``<Dial>``
  through the REST API; Twilio then ends our stream itself.
- Limits: a spoken warning before the maximum duration, then a goodbye; a re-prompt after the
  caller has been idle, then a polite goodbye. The words are the persona's ``texts``.
- Greeting grace: for the first moments of the greeting, caller audio is replaced by silence
  before it reaches local VAD and the model, so echo or a caller's "hello?" does not cut the
  greeting off.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from loguru import logger
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from twilio.twiml.voice_response import VoiceResponse

from pipelines.aio import cancel_and_wait
from pipelines.personas.texts import DEFAULTS

Instruct = Callable[[str], Awaitable[bool]]
HangUp = Callable[[str], Awaitable[None]]
Redirect = Callable[[str], Awaitable[bool]]
WaitPlayed = Callable[[float], Awaitable[None]]

# Bounds on audio being played (a goodbye, a reply finishing): these stay real time at any
# time scale, since audio does.
GOODBYE_TIMEOUT_SECS = 10.0
# Before the bot is told to speak (warning, re-prompt, goodbye), how long a reply in progress
# may finish first: an instruction sent mid-reply would interrupt it.
QUIET_WAIT_SECS = 3.0
# How often the limits are checked (scaled with the limits themselves).
TICK_SECS = 0.25
# wrap_up (a server drain): how long the bot's current answer may run on before the goodbye,
# and how long both sides must have been quiet for a moment to count as a pause (real time).
WRAP_UP_QUIET_WAIT_SECS = 15.0
WRAP_UP_PAUSE_SECS = 1.0


def dial_twiml(to: str, announcement: str | None, texts: Any) -> str:
    """The TwiML a transfer replaces the call's with: the announcement, then ``<Dial>``.

    ``texts``: the persona's (``pipelines.personas.texts``), for the ``<Say>``'s voice and
    language.
    """
    vr = VoiceResponse()
    if announcement:
        vr.say(announcement, voice=texts.say_voice, language=texts.say_language)
    vr.dial(to)
    return str(vr)


def say_exactly(text: str) -> str:
    """The instruction that makes the model say ``text`` now."""
    return f'Say exactly this to the caller, and nothing else: "{text}"'


def wrap_up_instruction(goodbye: str) -> str:
    """A drain's instruction: the persona's ``texts.drain_goodbye``, word for word."""
    return f"The line has to close now. {say_exactly(goodbye)}"


WRAP_UP_GOODBYE = wrap_up_instruction(DEFAULTS["en"]["drain_goodbye"])  # the English default


class CallControl:
    """Owns the call's timers and the order of its ending.

    Args:
        persona: The call's persona (limits, tools, barge-in settings).
        instruct: Sends the model an instruction it answers at once.
        hang_up: Ends the call normally, with a reason; closes the stream.
        redirect: Replaces the call's TwiML through the REST API, or ``None`` without
            credentials.
        wait_played: Waits (bounded) until the audio sent so far has been played.
        clock: Monotonic clock, injectable for tests.
        time_scale: Multiplies the persona's limits (duration, warning, idle timeout) and
            the check interval, for tests and demos; the bounds on audio being played
            (``QUIET_WAIT_SECS``, ``GOODBYE_TIMEOUT_SECS``, the greeting grace) stay real time.
    """

    def __init__(
        self,
        persona: Any,
        *,
        instruct: Instruct,
        hang_up: HangUp,
        redirect: Redirect | None,
        wait_played: WaitPlayed,
        clock: Callable[[], float] = time.monotonic,
        time_scale: float = 1.0,
    ) -> None:
        if time_scale <= 0:
            raise ValueError(f"CallControl: time_scale got {time_scale!r}, expected a number > 0")
        self._persona = persona
        self._scale = time_scale
        self._instruct = instruct
        self._hang_up = hang_up
        self._redirect = redirect
        self._wait_played = wait_played
        self._clock = clock
        self._started = clock()
        self._last_activity = self._started
        self._bot_speaking = False
        self._user_speaking = False
        self._reprompts = 0
        self._warned = False
        self._ending: str | None = None
        self._after_reply: Callable[[], Awaitable[None]] | None = None
        self._reply_seen = False
        self._bot_quiet = asyncio.Event()
        self._bot_quiet.set()
        self._greets = persona.greeting.mode != "wait"
        self._greeting_started: float | None = None
        self._greeting_done = False
        self._timer: asyncio.Task[None] | None = None
        self._finisher: asyncio.Task[None] | None = None

    # lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the limits timer."""
        limits = self._persona.limits
        if limits.max_call_secs or limits.idle_timeout_secs:
            self._timer = asyncio.get_running_loop().create_task(
                self._run_timer(), name="call-control:timer"
            )

    async def stop(self) -> None:
        """Cancel and await the timers and any ending in progress."""
        await cancel_and_wait(self._timer, self._finisher)

    @property
    def ending(self) -> str | None:
        """Why the bot is ending the call, once it has decided to."""
        return self._ending

    # observation -----------------------------------------------------------------------

    def observe(self, frame: Frame) -> None:
        """Track who is speaking (called by the taps in the pipeline)."""
        now = self._clock()
        if isinstance(frame, BotStartedSpeakingFrame):
            self._bot_speaking = True
            self._bot_quiet.clear()
            self._reply_seen = True
            if self._greeting_started is None:
                self._greeting_started = now
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self._bot_speaking = False
            self._bot_quiet.set()
            self._last_activity = now
            if self._greeting_started is not None:
                self._greeting_done = True
            if self._after_reply is not None and self._reply_seen:
                action, self._after_reply = self._after_reply, None
                self._spawn_finisher(action)
        elif isinstance(frame, UserStartedSpeakingFrame):
            self._user_speaking = True
            self._reprompts = 0
            self._last_activity = now
        elif isinstance(frame, UserStoppedSpeakingFrame):
            self._user_speaking = False
            self._last_activity = now
        elif isinstance(frame, TranscriptionFrame | InterimTranscriptionFrame):
            self._reprompts = 0
            self._last_activity = now

    def in_greeting_grace(self) -> bool:
        """Whether caller audio should not reach barge-in detection right now."""
        grace_ms = self._persona.barge_in.greeting_grace_ms
        if not self._greets or not grace_ms or self._greeting_done:
            return False
        if self._greeting_started is None:
            return False
        return (self._clock() - self._greeting_started) * 1000 < grace_ms

    # tools -----------------------------------------------------------------------------

    async def end_call_tool(self, params: Any) -> None:
        """``end_call``: let the model say goodbye, then hang up once it has been played."""
        # The model's own words stay out of INFO logs: they may carry caller details.
        logger.debug(f"end_call: {params.arguments.get('reason')!r}")
        # A reply already playing counts as the goodbye (models often speak, then call end_call).
        self._begin_ending("bot ended the call (end_call)", current_reply_counts=True)
        await params.result_callback({"status": "ok", "next": "say a short goodbye now"})

    async def transfer_call_tool(self, params: Any) -> None:
        """``transfer_call``: announce, then hand the call to the persona's number."""
        tool = self._persona.tools.transfer_call
        if tool is None or self._redirect is None:
            await params.result_callback(
                {"status": "unavailable", "next": "tell the caller a transfer is not possible now"}
            )
            return
        self._ending = "bot: transfer_call"
        await params.result_callback({"status": "ok", "next": "the call is being transferred"})
        texts = self._persona.texts  # transfer_announcement: from tool.announcement or texts
        twiml = dial_twiml(tool.to, texts.transfer_announcement, texts)

        async def transfer() -> None:
            await self._wait_played(2.0)
            await self._redirect_or_hang_up(twiml)

        self._after_reply = transfer
        self._reply_seen = self._bot_speaking
        self._spawn_finisher(self._fallback(transfer, GOODBYE_TIMEOUT_SECS))

    # keys the persona maps (pipelines.call.dtmf): no model turn --------------------------

    def key_pressed(self) -> None:
        """The caller pressed a key: activity, like speech (the idle limit restarts)."""
        self._reprompts = 0
        self._last_activity = self._clock()

    async def transfer_now(self, to: str, announcement: str | None, reason: str) -> bool:
        """Redirect the call to a ``<Dial>`` at once, as ``transfer_call`` does; False if not."""
        if self._ending is not None or self._redirect is None:
            return False
        self._ending = reason
        twiml = dial_twiml(to, announcement, self._persona.texts)
        self._spawn_finisher(self._redirect_or_hang_up(twiml))
        return True

    async def _redirect_or_hang_up(self, twiml: str) -> None:
        """Replace the call's TwiML (a transfer); hang up if Twilio's REST API refused."""
        assert self._redirect is not None  # checked by both callers
        if not await self._redirect(twiml):
            await self._hang_up("transfer failed")

    async def end_now(self, goodbye: str | None, reason: str) -> bool:
        """Say ``goodbye`` and hang up once played, as ``end_call`` does (none: hang up now)."""
        if self._ending is not None:
            return False
        if goodbye:
            await self.say_goodbye(goodbye, reason)
        else:
            self._ending = reason
            await self._hang_up(reason)
        return True

    # limits ----------------------------------------------------------------------------

    async def _run_timer(self) -> None:
        while self._ending is None:
            await asyncio.sleep(TICK_SECS * self._scale)
            try:
                await self._check_limits()
            except Exception:
                # A failed instruction must not switch the limits off for the rest of the call.
                logger.exception("call limits check failed")

    async def _say(self, text: str) -> bool:
        """Have the bot say ``text`` once it is quiet (bounded wait); False if not sent."""
        try:
            await asyncio.wait_for(self._bot_quiet.wait(), QUIET_WAIT_SECS)
        except TimeoutError:
            pass
        return await self._instruct(say_exactly(text))

    async def _check_limits(self) -> None:
        if self._ending is not None:
            return
        limits, texts, scale = self._persona.limits, self._persona.texts, self._scale
        now = self._clock()
        elapsed = now - self._started
        if limits.max_call_secs:
            warn_at = (limits.max_call_secs - limits.max_call_warning_secs) * scale
            if not self._warned and limits.max_call_warning_secs and elapsed >= warn_at:
                warning = texts.said("max_call_warning", seconds=limits.max_call_warning_secs)
                self._warned = await self._say(warning)
            if elapsed >= limits.max_call_secs * scale:
                goodbye = texts.said("max_call_goodbye", seconds=limits.max_call_secs)
                await self.say_goodbye(goodbye, "max call duration reached")
                return
        idle = (
            limits.idle_timeout_secs
            and not self._bot_speaking
            and not self._user_speaking
            and now - self._last_activity >= limits.idle_timeout_secs * scale
        )
        if not idle:
            return
        if self._reprompts >= limits.idle_max_reprompts:
            await self.say_goodbye(texts.said("idle_goodbye"), "caller idle")
            return
        self._last_activity = now
        if await self._say(texts.said("idle_reprompt")):
            self._reprompts += 1

    async def say_goodbye(self, text: str, reason: str) -> None:
        """Say ``text``, then hang up once it has been played.

        Only a reply that starts after the instruction counts as the goodbye; if none is
        played within ``GOODBYE_TIMEOUT_SECS``, the call ends anyway.
        """
        self._begin_ending(reason, current_reply_counts=False)
        await self._say(text)

    async def wrap_up(self, reason: str) -> bool:
        """End the call politely from outside (a server drain); False if it is ending already.

        Waits, at most ``WRAP_UP_QUIET_WAIT_SECS``, for a pause (the greeting and the bot's
        current answer over, neither side heard for ``WRAP_UP_PAUSE_SECS``), so no answer is
        cut; then the bot says goodbye in the persona's voice and language, and the call is
        hung up once the goodbye has been played (within ``GOODBYE_TIMEOUT_SECS``).
        """
        deadline = self._clock() + WRAP_UP_QUIET_WAIT_SECS
        while self._ending is None and self._clock() < deadline:
            greeted = self._greeting_done or not self._greets
            talking = self._bot_speaking or self._user_speaking
            if (
                greeted
                and not talking
                and self._clock() - self._last_activity >= WRAP_UP_PAUSE_SECS
            ):
                break
            await asyncio.sleep(0.1)
        if self._ending is not None:
            return False
        self._begin_ending(reason, current_reply_counts=False)
        await self._instruct(wrap_up_instruction(self._persona.texts.said("drain_goodbye")))
        return True

    # ending ----------------------------------------------------------------------------

    def _begin_ending(self, reason: str, *, current_reply_counts: bool) -> None:
        if self._ending is not None:
            return
        self._ending = reason
        self._reply_seen = current_reply_counts and self._bot_speaking

        async def finish() -> None:
            await self._hang_up(reason)

        self._after_reply = finish
        self._spawn_finisher(self._fallback(finish, GOODBYE_TIMEOUT_SECS))

    async def _fallback(self, action: Callable[[], Awaitable[None]], secs: float) -> None:
        """Run ``action`` anyway if no goodbye reply was played within ``secs``."""
        await asyncio.sleep(secs)
        if self._after_reply is not None:
            self._after_reply = None
            logger.warning("no goodbye was played in time; ending the call anyway")
            await action()

    def _spawn_finisher(self, coro_or_action: Any) -> None:
        """Run the ending step; it replaces a pending fallback (which only sleeps)."""
        coro = coro_or_action() if callable(coro_or_action) else coro_or_action
        if self._finisher and not self._finisher.done():
            self._finisher.cancel()  # awaited in stop(); it holds no resources
        self._finisher = asyncio.get_running_loop().create_task(coro, name="call-control:end")


class CallTap(FrameProcessor):
    """Feeds speaking and transcription events to ``CallControl``.

    The greeting grace is applied to caller audio in ``pipelines.call.caller_audio``, which is
    where caller audio goes; the taps only observe.
    """

    def __init__(self, control: CallControl, journal: Any = None, **kwargs: Any) -> None:
        # Direct mode: a pass-through needs no queue and task hop of its own.
        kwargs.setdefault("enable_direct_mode", True)
        super().__init__(**kwargs)
        self._control = control
        # The call's journal (``pipelines.call.journal``), fed downstream frames: given only
        # to the tap after the transport output, where they have reached the phone.
        self._journal = journal

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Observe every frame and pass it on."""
        await super().process_frame(frame, direction)
        if not isinstance(frame, InputAudioRawFrame):
            self._control.observe(frame)
            if self._journal is not None and direction == FrameDirection.DOWNSTREAM:
                self._journal.observe(frame)
        await self.push_frame(frame, direction)
