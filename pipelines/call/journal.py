"""One call's journal: its transcript turn by turn, and the figures its record keeps.

The server stores it at the call's end (``bot.records``); while the call runs, every turn that
closes is also handed to ``ProcessResources.turn_ended`` (a live view). Nothing here touches
audio: it is fed by

- ``pipelines.gemini.transcripts.Transcripts`` (the ``TranscriptListener`` port): the caller's
  sentences (``inputTranscription``), the bot's words as the model produced them
  (``outputTranscription``) and the model's token usage (``usageMetadata``);
- the tap after the transport output (``CallTap``), which sees frames as they reach the phone:
  ``BotStartedSpeaking``/``BotStoppedSpeaking`` (when the bot was heard), the bot's text frames
  in order with its audio (so the text past the output is what was sent to the phone), the
  ``InterruptionFrame`` the output forwards after ``clear`` (a barge-in), and the caller's
  turn ends (response latency).

Turns are anchored where they begin, not where their words arrive: the Live API's caller
transcript often lands after the bot has started answering, so a caller turn begins at the
caller's speech start (local VAD), a bot turn at its first audio or words, and ``turns()`` is
in that order. A new caller turn begins when the caller speaks after the bot did; a new bot
turn when the bot speaks after the caller did, or after its last turn was cut.

A bot turn is *interrupted* when a barge-in cut it while it was being played; its
``heard_text`` is the part of its words whose audio was sent before the ``clear`` (Twilio
may have held up to the pacing lead, 0.4 s, of it unplayed), and ``heard_secs`` the seconds of
its audio played. Cheap: a few attribute updates per frame the tap sees, no work per audio
chunk.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    InterruptionFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)

from pipelines.ports import TranscriptTurn

# How many response latencies a call keeps (p50/max are taken from them).
MAX_RESPONSE_SAMPLES = 500


@dataclass
class _Turn:
    speaker: str
    at: float
    text: str = ""
    heard: str = ""
    heard_secs: float = 0.0
    interrupted: bool = False
    emitted: bool = False

    def frozen(self, started: float) -> TranscriptTurn:
        bot = self.speaker == "bot"
        return TranscriptTurn(
            speaker=self.speaker,
            text=self.text.strip(),
            at_secs=round(max(0.0, self.at - started), 3),
            interrupted=self.interrupted,
            heard_text=self.heard.strip() if bot else None,
            heard_secs=round(self.heard_secs, 3) if bot else None,
        )


@dataclass
class CallJournal:
    """Collects one call's transcript and figures (see the module docstring).

    Args:
        started: ``time.monotonic()`` at the call's start.
        keep_text: False: turns are counted and timed but their words are not kept (a persona
            with ``records: {transcript: false}``).
        on_turn: Called with each turn as the next one begins (the live view); None: nobody
            listens.
        stop_lag_secs: How long after the caller goes quiet their local turn ends (the VAD's
            ``stop_secs`` and the turn strategy's wait, ``pipelines.call.turns``): response
            latency is counted from the silence, not the report.
        clock: The monotonic clock (tests).
    """

    started: float = field(default_factory=time.monotonic)
    keep_text: bool = True
    on_turn: Callable[[TranscriptTurn], None] | None = None
    stop_lag_secs: float = 0.0
    clock: Callable[[], float] = time.monotonic
    barge_ins: int = 0
    first_audio_secs: float | None = None
    response_secs: list[float] = field(default_factory=list)
    tokens: dict[str, int] = field(default_factory=dict)
    _turns: list[_Turn] = field(default_factory=list)
    _caller: _Turn | None = None  # the latest caller turn
    _bot: _Turn | None = None  # the latest bot turn: words, heard words and audio go to it
    _speaking_since: float | None = None
    _caller_speaking: bool = False
    _caller_quiet_at: float | None = None  # the caller went quiet; no answer heard yet
    _answer_started: float | None = None  # a new bot turn began while the caller spoke

    # the TranscriptListener port ---------------------------------------------------------

    def caller_said(self, text: str) -> None:
        """A sentence of the caller's words."""
        turn = self._caller
        # A turn begun by the caller's speech waits for its words, even if the bot has begun
        # answering since (the transcript comes late); one with words ends at the bot's turn.
        if turn is None or (turn.text and self._after(self._bot, turn)):
            turn = self._new("caller")
        turn.text = f"{turn.text} {text}" if turn.text else text
        self._emit_ready()

    def bot_said(self, text: str) -> None:
        """A fragment of the bot's words as the model produced them."""
        self._bot_turn().text += text

    def model_usage(self, tokens: Mapping[str, int]) -> None:
        """Token counts of one ``usageMetadata``, by kind (summed over the call)."""
        for kind, count in tokens.items():
            if count:
                self.tokens[kind] = self.tokens.get(kind, 0) + int(count)

    # frames past the transport output -----------------------------------------------------

    def observe(self, frame: Frame) -> None:
        """A frame downstream of the transport output (``CallTap``)."""
        if isinstance(frame, TTSTextFrame):
            if self._bot is not None:
                self._bot.heard += frame.text
        elif isinstance(frame, BotStartedSpeakingFrame):
            self._bot_started()
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self._stopped_speaking()
        elif isinstance(frame, InterruptionFrame):
            self._interrupted()
        elif isinstance(frame, UserStartedSpeakingFrame):
            self._caller_started()
        elif isinstance(frame, UserStoppedSpeakingFrame):
            self._caller_stopped()

    # results ------------------------------------------------------------------------------

    def turns(self) -> list[TranscriptTurn]:
        """Every turn with words or audio so far, in the order they began."""
        kept = [t for t in self._turns if t.text or t.heard or t.heard_secs]
        return [t.frozen(self.started) for t in sorted(kept, key=lambda t: t.at)]

    @property
    def speaking(self) -> str | None:
        """Who is heard now: ``bot`` (its audio is being played), ``caller``, or None."""
        if self._speaking_since is not None:
            return "bot"
        return "caller" if self._caller_speaking else None

    def current(self) -> TranscriptTurn | None:
        """The open turn (not yet handed to ``on_turn``) if it has content, as it may leave."""
        for turn in reversed(self._turns):
            if turn.emitted:
                return None
            if turn.text or turn.heard or turn.heard_secs:
                return self._out(turn.frozen(self.started))
        return None

    def finish(self) -> list[TranscriptTurn]:
        """The call is over: every turn, with its words only if they are kept."""
        self._stopped_speaking()
        self._emit_ready(everything=True)
        return [self._out(t) for t in self.turns()]

    def _out(self, turn: TranscriptTurn) -> TranscriptTurn:
        """``turn`` as it may leave the journal: without its words unless they are kept."""
        if self.keep_text:
            return turn
        heard = "" if turn.heard_text is not None else None
        return TranscriptTurn(
            turn.speaker, "", turn.at_secs, turn.interrupted, heard, turn.heard_secs
        )

    # internals ----------------------------------------------------------------------------

    @staticmethod
    def _after(a: _Turn | None, b: _Turn) -> bool:
        return a is not None and a.at >= b.at

    def _new(self, speaker: str) -> _Turn:
        turn = _Turn(speaker, self.clock())
        self._turns.append(turn)
        self._emit_ready()
        if speaker == "bot":
            self._bot = turn
        else:
            self._caller = turn
        return turn

    def _emit_ready(self, *, everything: bool = False) -> None:
        """Hand every finished turn with content to ``on_turn`` once (all but the newest)."""
        if self.on_turn is None:
            return
        for turn in self._turns if everything else self._turns[:-1]:
            if not turn.emitted and (turn.text or turn.heard_secs):
                turn.emitted = True
                self.on_turn(self._out(turn.frozen(self.started)))

    def _bot_turn(self) -> _Turn:
        bot = self._bot
        if (
            bot is None
            or bot.interrupted
            or (self._caller is not None and self._after(self._caller, bot))
        ):
            return self._new("bot")
        return bot

    def _bot_started(self) -> None:
        now = self.clock()
        fresh = self._bot
        bot = self._bot_turn()
        self._speaking_since = now
        if self.first_audio_secs is None:
            self.first_audio_secs = now - self.started
        if bot is fresh and bot.heard_secs:
            return  # the same answer, resumed after a pause in its audio
        if self._caller_quiet_at is not None:
            self._response(now - self._caller_quiet_at)
        elif self._caller_speaking and self._answer_started is None:
            self._answer_started = now  # the model answered before local VAD said "quiet"

    def _stopped_speaking(self) -> None:
        since, self._speaking_since = self._speaking_since, None
        if since is not None and self._bot is not None:
            self._bot.heard_secs += self.clock() - since

    def _interrupted(self) -> None:
        # Pipecat interrupts on every caller speech start; it cuts a bot turn only while the
        # bot is heard (the output forwards the interruption before it stops speaking).
        bot = self._bot
        if bot is None or self._speaking_since is None or bot.interrupted:
            return
        bot.interrupted = True
        self.barge_ins += 1
        self._stopped_speaking()

    def _caller_started(self) -> None:
        self._caller_speaking = True
        self._caller_quiet_at = None
        self._answer_started = None
        caller = self._caller
        if caller is None or self._after(self._bot, caller):
            self._new("caller")

    def _caller_stopped(self) -> None:
        self._caller_speaking = False
        quiet_at = self.clock() - self.stop_lag_secs
        started, self._answer_started = self._answer_started, None
        if started is not None:
            if started >= quiet_at:
                self._response(started - quiet_at)
            return
        self._caller_quiet_at = quiet_at

    def _response(self, secs: float) -> None:
        self._caller_quiet_at = None
        if len(self.response_secs) < MAX_RESPONSE_SAMPLES:
            self.response_secs.append(max(0.0, secs))
