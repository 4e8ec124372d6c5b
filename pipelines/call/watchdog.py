"""The model watchdog: never leave the caller in silence the model causes (issue 12).

A model that stalls cannot be asked to speak, so what the caller hears in trouble is a
pre-recorded clip (``clip_audio``). One ``ModelWatchdog`` per call watches three silences:

(a) **no setup**: no ``setupComplete`` since the call started (a persona that waits for the
    caller to speak first: since the caller's first turn ended);
(b) **no reply**: the caller's turn ended (local VAD; the silence counts from the caller's last
    word, ``turn_end_lag_secs`` before ``UserStoppedSpeakingFrame``), or the call told the model
    to speak (the greeting, an instruction), and no model audio came;
(c) **a reply that stops**: the model's audio stopped before its generation was complete.

For (b) and (c) the silence starts when the caller has *heard* everything: the audio already
sent is tracked as an estimated playout end (the output plays in real time), so a model that
sends faster than real time and then pauses is not mistaken for a stall, and the clip never
lands on top of audio still playing.

In trouble: the holding clip after ``hold_after_secs`` of silence, again after each further
``hold_after_secs`` of silence (the holding clip's own length is not silence); for (b) and (c)
a reconnect that resumes the session after ``reconnect_after_secs`` (once per episode: a 6 s
stall resumes on its own first), after which the model is asked to answer (its caller turn
ended on the old connection); once the call's trouble reaches ``give_up_after_secs`` (all its
episodes together), the apology clip, then a normal hang-up (the pipeline waits for the
apology's end mark, then the REST hang-up). An episode ends when model audio arrives (for (a):
when the session is ready and nothing more is expected), when the caller starts talking, or
when the model closes a turn without audio: a caller phrase it may legitimately ignore
(background speech, a cough the local VAD took for a turn) is answered by a bare
``turnComplete``, which is its choice, not a stall. A caller phrase that overlapped audible bot
audio arms nothing (a backchannel; the reply still playing is (c)'s business). Thresholds come
from the persona (``watchdog:``; defaults 3 / 8 / 15 s) times the call's ``time_scale``.

**The figure:** with the defaults the caller never hears more than 3 s of unexplained silence
(plus up to 60 ms of timer and playout jitter): before the first holding phrase, and between
holding phrases until the model answers or the call gives up at 15 s of trouble.

The timer is one ``loop.call_at`` handle, moved lazily: model audio (every ~80 ms) only updates
two floats; the handle re-arms itself when it fires early.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from loguru import logger

from pipelines.call.clip_audio import Clip
from pipelines.call.watchdog_settings import Wait, WatchdogSettings

PlayClip = Callable[[Clip, bool], Awaitable[None]]
Reconnect = Callable[[], Awaitable[bool]]
GiveUp = Callable[[str], Awaitable[None]]
Nudge = Callable[[bool], Coroutine[Any, Any, None]]

# Timers fire this much early or late at most (loop granularity): not worth a re-arm.
_SLACK_SECS = 0.005


class ModelWatchdog:
    """Holding clip, reconnect, apology and hang-up for one call (see the module docstring).

    Args:
        settings: The thresholds.
        hold: The holding clip.
        apology: The apology clip.
        play: Plays a clip (``final``: the last thing the call says, not interruptible).
        reconnect: Asks the Live API connection to reconnect and resume; False if it could not.
        give_up: Ends the call normally, with a reason, after the apology was queued.
        nudge: After a reconnect of its own, once the new session is ready and the answer is
            still owed: asks the model to answer (``True``: to finish a cut-off reply), since
            the caller's turn ended on the old connection and nothing else would prompt it.
        expect_greeting: The model speaks first (the persona greets).
        label: Names the call in log lines (its SID).
        clock: Monotonic clock, injectable for tests.
    """

    def __init__(
        self,
        settings: WatchdogSettings,
        *,
        hold: Clip,
        apology: Clip,
        play: PlayClip,
        reconnect: Reconnect,
        give_up: GiveUp,
        nudge: Nudge | None = None,
        expect_greeting: bool,
        label: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._s = settings
        self._hold = hold
        self._apology = apology
        self._play = play
        self._reconnect = reconnect
        self._give_up = give_up
        self._nudge = nudge
        self._nudge_due = False
        self._nudging: asyncio.Task[None] | None = None
        self._label = label
        self._clock = clock
        self._waiting: Wait | None = None
        self._reply_pending = expect_greeting  # a reply is due once the session is ready
        self._ready = False
        self._silence_from = 0.0
        self._playout_end = 0.0
        self._episode_from: float | None = None
        self._trouble_secs = 0.0
        self._reconnected = False
        self._stale_turn = False
        self._gave_up = False
        self._timer: asyncio.TimerHandle | None = None
        self._acting: asyncio.Task[None] | None = None
        self.firings: list[str] = []  # what it did, in order (for tests and the call's log)

    # lifecycle ---------------------------------------------------------------------------

    def start(self, since: float | None = None) -> None:
        """The call started (at ``since``, a clock reading): wait for the setup and greeting."""
        if self._waiting is None and self._reply_pending and not self._ready:
            self._arm(Wait.SETUP, self._clock() if since is None else since)

    def stop(self) -> None:
        """Stop for good (the call is ending)."""
        self._gave_up = True
        self._waiting = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in (self._acting, self._nudging):
            if task is not None and not task.done() and task is not asyncio.current_task():
                task.cancel()

    @property
    def trouble_secs(self) -> float:
        """Seconds of trouble so far in this call (finished episodes)."""
        return self._trouble_secs

    # events --------------------------------------------------------------------------------

    def session_ready(self) -> None:
        """A Live API session is ready (the first, or one after a reconnect)."""
        self._ready = True
        pending, self._reply_pending = self._reply_pending, False
        if self._waiting is Wait.SETUP:
            if pending:
                self._waiting = Wait.REPLY  # the same silence goes on until the greeting
                self._schedule()
            else:
                self._end_episode("the session is ready")
        elif self._waiting is None and pending:
            self._arm(Wait.REPLY, self._clock())
        elif self._nudge_due and self._waiting is not None and self._nudge is not None:
            self._nudge_due = False
            nudge = self._nudge(self._waiting is Wait.RESUME)
            self._nudging = asyncio.get_running_loop().create_task(nudge, name="watchdog-nudge")

    def caller_turn_ended(self) -> None:
        """The caller stopped speaking (local VAD): a reply is due."""
        self._expect(self._clock() - self._s.turn_end_lag_secs, overlap_check=True)

    def expect_reply(self) -> None:
        """The call told the model to speak now (an instruction was sent)."""
        self._expect(self._clock(), overlap_check=False)

    def caller_started(self) -> None:
        """The caller is talking: this silence is theirs."""
        if self._waiting in (Wait.REPLY, Wait.RESUME):
            self._end_episode("the caller speaks")

    def model_audio(self, secs: float) -> None:
        """Model audio of ``secs`` was sent to the output (the hot path: two floats)."""
        if self._gave_up:
            return
        now = self._clock()
        self._playout_end = max(now, self._playout_end) + secs
        self._stale_turn = False
        if self._waiting is not Wait.RESUME:
            if self._episode_from is not None:
                self._end_episode("model audio arrived")
            self._arm(Wait.RESUME, now)
        else:
            self._silence_from = now

    def server_content(self, sc: Any) -> None:
        """A server message's ``serverContent``: a generation's end disarms the wait."""
        if sc.interrupted:
            self._stale_turn = True  # its turnComplete closes the interrupted generation
            if self._waiting is Wait.RESUME:
                self._end_episode("the model was interrupted")
            return
        if not (sc.turn_complete or sc.generation_complete):
            return
        if self._waiting is Wait.RESUME:  # audio came since any interruption: a new reply
            self._stale_turn = False
            self._end_episode("the generation is complete")
            return
        stale = self._stale_turn
        if sc.turn_complete:
            self._stale_turn = False
        if stale:
            return
        if self._waiting is Wait.REPLY and self._ready:
            logger.debug(f"{self._label} watchdog: the model closed a turn without audio")
            self._end_episode("the model chose not to answer")

    def interrupted(self) -> None:
        """Local barge-in: the phone was cleared, the reply is over."""
        self._playout_end = self._clock()
        if self._waiting is Wait.RESUME:
            self._stale_turn = True  # the model may still close the interrupted generation
            self._end_episode("the caller barged in")

    async def connection_gap(self, secs: float) -> None:
        """The Live API connection has been down ``secs`` (``LiveConnection.on_gap``).

        While a reply is owed or in progress and the caller is about to hear silence, the
        holding phrase plays now rather than ``hold_after_secs`` into the silence; the
        connection repairs itself (its own reconnect budget), so no reconnect is asked for.
        """
        waiting = self._waiting
        if self._gave_up or waiting not in (Wait.REPLY, Wait.RESUME):
            return
        if self._acting is not None and not self._acting.done():
            return
        now = self._clock()
        if self._playout_end - now > self._s.hold_after_secs:
            return  # audio already received covers it; the timer watches what follows
        if self._episode_from is None:
            self._episode_from = min(now, self._quiet_from())
        self.firings.append("hold")
        logger.warning(
            f"{self._label} watchdog: Live API connection down {secs:.1f} s while waiting for "
            f"{waiting.value}: holding phrase ({self._hold.name})"
        )
        self._playout_end = max(now, self._playout_end) + self._hold.secs
        await self._play(self._hold, False)
        self._schedule()

    # state -------------------------------------------------------------------------------

    def _expect(self, silence_from: float, *, overlap_check: bool) -> None:
        if self._gave_up:
            return
        if not self._ready:
            self._reply_pending = True  # a reply is due once the session is ready
            if self._waiting is None:  # the caller speaks first: the setup wait starts now
                self._arm(Wait.SETUP, silence_from)
            return
        if self._waiting is Wait.RESUME:
            return  # the reply in progress is watched already
        if overlap_check and self._playout_end > self._clock():
            return  # said over audible bot audio: a backchannel the model may ignore
        if self._waiting is None:
            self._arm(Wait.REPLY, silence_from)
        else:
            self._silence_from = max(self._silence_from, silence_from)

    def _arm(self, what: Wait, silence_from: float) -> None:
        if self._gave_up:
            return
        self._waiting = what
        self._silence_from = silence_from
        self._schedule()

    def _end_episode(self, why: str) -> None:
        self._waiting = None
        if self._episode_from is not None:
            secs = self._clock() - self._episode_from
            self._trouble_secs += secs
            self._episode_from = None
            self._reconnected = False
            logger.info(
                f"{self._label} watchdog: recovered after {secs:.1f} s ({why}); "
                f"{self._trouble_secs:.1f} s of trouble in this call"
            )
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _quiet_from(self) -> float:
        return max(self._silence_from, self._playout_end)

    def _deadline(self) -> float:
        s = self._s
        hold_at = self._quiet_from() + s.hold_after_secs
        start = self._episode_from
        if start is None:
            return hold_at
        give_up_at = start + max(s.hold_after_secs, s.give_up_after_secs - self._trouble_secs)
        due = min(hold_at, give_up_at)
        if self._waiting is not Wait.SETUP and not self._reconnected:
            due = min(due, start + s.reconnect_after_secs)
        return due

    def _schedule(self) -> None:
        if self._waiting is None or self._gave_up:
            return
        if self._acting is not None and not self._acting.done():
            return  # it schedules when it is done
        loop = asyncio.get_running_loop()
        deadline = self._deadline()
        timer = self._timer
        if timer is not None:
            if abs(timer.when() - self._to_loop(loop, deadline)) <= _SLACK_SECS:
                return
            timer.cancel()
        self._timer = loop.call_at(self._to_loop(loop, deadline), self._fire)

    def _to_loop(self, loop: asyncio.AbstractEventLoop, at: float) -> float:
        return loop.time() + (at - self._clock())

    def _fire(self) -> None:
        self._timer = None
        if self._waiting is None or self._gave_up:
            return
        if self._clock() < self._deadline() - _SLACK_SECS:
            self._schedule()  # audio moved the deadline since
            return
        self._acting = asyncio.get_running_loop().create_task(self._act(), name="call-watchdog")

    async def _act(self) -> None:
        try:
            await self._step()
        except Exception:
            logger.exception(f"{self._label} watchdog step failed")
        finally:
            self._acting = None
            self._schedule()

    async def _step(self) -> None:
        waiting = self._waiting
        if waiting is None:
            return
        s, now = self._s, self._clock()
        quiet_from = self._quiet_from()
        if self._episode_from is None:
            self._episode_from = quiet_from
        start = self._episode_from
        trouble = self._trouble_secs + now - start
        silent = now - quiet_from
        if trouble >= s.give_up_after_secs - _SLACK_SECS and now - start >= s.hold_after_secs:
            await self._give_up_now(waiting, trouble)
            return
        if (
            waiting is not Wait.SETUP
            and not self._reconnected
            and now - start >= s.reconnect_after_secs - _SLACK_SECS
        ):
            self._reconnected = True
            self._nudge_due = True
            self.firings.append("reconnect")
            logger.warning(
                f"{self._label} watchdog: no {waiting.value} for {now - start:.1f} s: "
                "reconnecting to resume the session"
            )
            if not await self._reconnect():
                self._nudge_due = False
                logger.warning(f"{self._label} watchdog: the reconnect could not be started")
            if self._episode_from is None or self._gave_up:
                return  # the model answered meanwhile
            silent = self._clock() - self._quiet_from()
        if silent >= s.hold_after_secs - _SLACK_SECS:
            self.firings.append("hold")
            logger.warning(
                f"{self._label} watchdog: no {waiting.value} for {silent:.1f} s: "
                f"holding phrase ({self._hold.name})"
            )
            self._playout_end = max(self._clock(), self._playout_end) + self._hold.secs
            await self._play(self._hold, False)

    async def _give_up_now(self, waiting: Wait, trouble: float) -> None:
        self._gave_up = True
        self._waiting = None
        self.firings.append("apology")
        logger.warning(
            f"{self._label} watchdog: still no {waiting.value} after {trouble:.1f} s of trouble "
            f"in this call: apology ({self._apology.name}), then hanging up"
        )
        await self._play(self._apology, True)
        await self._give_up(f"model unresponsive ({waiting.value})")
