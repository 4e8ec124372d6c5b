"""The simulated caller's plan, step by step: what to do on each 20 ms tick.

:class:`PlanSteps` is the part of :class:`sim.caller.core.CallerCore` that walks the
:class:`sim.caller.plan.CallPlan`: when to speak, wait, barge in, press keys and hang up, and
whether a barge-in was answered. It reads the state the core keeps (the phone buffer, the
pending reply) and starts speech and hang-ups through the core. What the steps mean for dead air
(a ``pause`` after the bot finished is the caller's silence; a wait step still running at the
call's end means the caller was still waiting) is told to :mod:`sim.caller.dead_air` here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sim.caller.dead_air import DeadAir, DeadAirTracker
from sim.caller.phone import PhoneBuffer
from sim.caller.plan import (
    BargeIn,
    CallPlan,
    Dtmf,
    Hangup,
    Listen,
    Pause,
    Say,
    Utterance,
    WaitForGreeting,
    WaitForReply,
)
from sim.caller.result import CallResult

BARGEIN_QUIET_SECS = 0.3
"""A barge-in is answered without ``clear`` once the bot has been quiet this long."""


@dataclass
class BargeInState:
    """A barge-in in progress: when it started and how long to wait for the bot to stop."""

    start: float
    timeout_secs: float
    clear_at: float | None = None


class PlanSteps:
    """Runs a call's plan steps; mixed into :class:`sim.caller.core.CallerCore`."""

    plan: CallPlan
    res: CallResult
    buffer: PhoneBuffer
    _step: int
    _step_started: float | None
    _step_state: int
    _pending_response: float | None
    _reply_audible_start: float | None
    _barge: BargeInState | None
    _speech: Any
    _ended_at: float | None
    dead_air: DeadAirTracker

    def event(self, now: float, kind: str, detail: str = "") -> None:
        """Append a timeline event (the core's)."""
        raise NotImplementedError

    def _msg(self, event: str, body_key: str | None = None, body: object = None) -> str:
        raise NotImplementedError

    def _hangup(self, now: float, how: str) -> list[str]:
        raise NotImplementedError

    def _start_speech(self, now: float, utt: Utterance, kind: str) -> None:
        raise NotImplementedError

    def _pause_started(self, now: float) -> None:
        self.dead_air.caller_pauses(now, self.buffer.audible_until)

    def _note_dead_air(self, now: float, w: DeadAir | None) -> None:
        if w is not None and w.secs >= 1.0:  # the timeline notes the silences one notices
            self.event(now, "dead-air", f"{w.secs:.2f} s of silence ({w.kind}) from t=+{w.t:.3f}")

    def _finish_dead_air(self, now: float) -> None:
        """Close the caller's last wait at the call's end and fill in the dead-air figures."""
        step = self.plan.steps[self._step] if self._step < len(self.plan.steps) else None
        end = self._ended_at if self._ended_at is not None else now
        waiting = isinstance(step, WaitForGreeting | WaitForReply | Listen) and self._speech is None
        self._note_dead_air(end, self.dead_air.call_ended(end, self.buffer.audible_until, waiting))
        self.res.dead_air = self.dead_air.waits
        self.res.dead_air_secs = self.dead_air.longest_secs

    def _next_step(self, now: float) -> None:
        self._step += 1
        self._step_started = now
        self._step_state = 0

    def _run_step(self, now: float, out: list[str]) -> bool:
        """Advance the current step; True when it finished and the next one should run now."""
        steps = self.plan.steps
        if self._step >= len(steps):
            out.extend(self._hangup(now, "caller hung up"))
            return False
        step = steps[self._step]
        started = self._step_started if self._step_started is not None else now
        elapsed = now - started
        buf = self.buffer
        if isinstance(step, Hangup):
            out.extend(self._hangup(now, "caller hung up"))
            return False
        if isinstance(step, Say):
            if self._step_state == 0:
                self._step_state = 1
                self._start_speech(now, step.audio, "say")
                return False
            self._next_step(now)
            return True
        if isinstance(step, WaitForGreeting | WaitForReply):
            heard = (
                self.res.greeting_ms is not None
                if isinstance(step, WaitForGreeting)
                else self._pending_response is None
            )
            if heard and buf.audible_until <= now - step.quiet_secs:
                self._next_step(now)
                return True
            if elapsed >= step.timeout_secs:
                what = "greeting" if isinstance(step, WaitForGreeting) else "reply"
                self.event(now, "timeout", f"waited {step.timeout_secs:g} s for the {what} to end")
                self._next_step(now)
                return True
            return False
        if isinstance(step, BargeIn):
            if self._step_state == 1:
                self._next_step(now)
                return True
            rs = self._reply_audible_start
            if rs is not None and now >= rs + step.after_bot_audio_secs:
                self._step_state = 1
                if buf.audible_until > now:
                    self.res.bargeins += 1
                    self._barge = BargeInState(now, step.timeout_secs)
                else:
                    self.event(now, "barge-in", "bot already quiet: spoken over silence")
                self._start_speech(now, step.audio, "bargein")
                return False
            if elapsed >= step.timeout_secs:
                self.event(now, "timeout", "barge-in skipped: no bot audio to talk over")
                self._next_step(now)
                return True
            return False
        if isinstance(step, Listen):
            rs = self._reply_audible_start
            if rs is not None and now >= rs + step.secs:
                self._next_step(now)
                return True
            if rs is None and elapsed >= step.timeout_secs:
                self.event(now, "timeout", f"waited {step.timeout_secs:g} s for bot audio")
                self._next_step(now)
                return True
            return False
        if isinstance(step, Dtmf):
            if self._step_state >= len(step.digits):
                self._next_step(now)
                return True
            if elapsed >= self._step_state * step.gap_secs:
                digit = step.digits[self._step_state]
                self._step_state += 1
                out.append(self._msg("dtmf", "dtmf", {"track": "inbound_track", "digit": digit}))
                self.event(now, "dtmf", f"digit {digit}")
            return False
        if isinstance(step, Pause):
            if self._step_state == 0:
                self._step_state = 1
                self._pause_started(now)
            if elapsed >= step.secs or (step.until is not None and step.until.is_set()):
                self._next_step(now)
                return True
            return False
        raise TypeError(f"unknown plan step {step!r}")

    def _check_bargein(self, now: float) -> None:
        b = self._barge
        if b is None:
            return
        audible_until = self.buffer.audible_until
        if audible_until <= now - BARGEIN_QUIET_SECS:
            t = max(audible_until, b.start)
            self.res.bargein_to_silence_ms.append((t - b.start) * 1000)
            self.event(
                now, "barge-in", f"bot went quiet without clear after {(t - b.start) * 1000:.0f} ms"
            )
            self._barge = None
        elif now - b.start > b.timeout_secs:
            self.res.bargeins_unanswered += 1
            self.event(now, "barge-in", f"bot kept talking {b.timeout_secs:g} s after barge-in")
            self._barge = None
