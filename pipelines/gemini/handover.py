"""When a call moves to its next Live API connection, so no answer is cut.

``HandoverPlan`` is ``connection.LiveConnection``'s timing for planned switches. The service
cuts a connection at its deadline (``goAway`` says how far off); resuming while the old socket
is open is refused, so every switch closes the old socket first. What gets cut at the deadline
is whatever the model is *generating* then: audio already received keeps playing from the
output queue (and Twilio's buffer) while the next connection opens, so waiting for playback to
end is never needed. The rules:

- **After a goAway**, switch at the first moment the model is idle (no generation, no tool
  call pending; ``idle``) and the caller is not speaking; never later than ``deadline``
  (``time_left`` minus a margin). At the deadline the switch is forced: the answer in progress
  stops where its received audio ends, and the caller's question, which no handle covers, is
  re-sent and answered again on the next connection.
- **At the end of a caller turn** (``switch_at_turn_end``): if a goAway is pending, or the
  connection will not live long enough for an answer (its lifetime learned from an earlier
  goAway, the answer's length from the longest generation seen), switch now: the caller's
  words are re-sent to the next connection, which answers them whole. The old connection's
  messages after that moment are not played (the next one gives the answer). Except when the
  model is already answering (it hears the end of the caller's words ~0.5 s after they stop,
  our voice detector ~1 s after) and the pending goAway's deadline leaves room for that answer:
  the old connection gives it and the switch waits for the quiet after it. Switching then
  played the answer's first second or so twice: what the old connection had sent, then the
  whole answer from the next one. With the service's ~60 s warning this is the usual case.
- **A goAway just after an answer began** (``restart_on_go_away``): when the warning is
  shorter than an answer and the answer began under ``RESTART_WINDOW_SECS`` ago, switch now
  the same way rather than cut it at the deadline. With the real service's ~60 s warning this
  never applies; it is for short warnings (the emulator's ``lifetime`` fault: 1 s).
"""

from __future__ import annotations

from google.genai.types import LiveServerMessage

from pipelines.gemini.resend import ClientLog

# A goAway handover never waits past this much before the deadline (scaled), nor past this
# fraction of a short warning.
MARGIN_SECS = 1.0
MARGIN_FRACTION = 0.3
# An answer that began this recently is restarted on the next connection after a short goAway.
RESTART_WINDOW_SECS = 1.0
# The answer length assumed before one was seen, and the slack added to the longest seen.
DEFAULT_ANSWER_SECS = 15.0
ANSWER_SLACK_SECS = 1.0


class HandoverPlan:
    """The timing of one call's planned connection switches (see the module docstring).

    Args:
        time_scale: Multiplies the deadline margin.
    """

    def __init__(self, time_scale: float = 1.0) -> None:
        self._scale = time_scale
        self.lifetime: float | None = None  # learned from goAway: age at it + timeLeft
        self.longest_answer = 0.0  # generation seconds, first output -> generationComplete
        self.deadline: float | None = None  # a goAway is pending: switch by then
        self.tools_pending: set[str] = set()
        self._connected_at = 0.0
        self._generating_since: float | None = None

    def observe(self, message: LiveServerMessage, now: float, log: ClientLog) -> None:
        """Follow the model's generation and tool calls (here and in the re-send ``log``)."""
        sc = message.server_content
        if sc is not None:
            said = sc.output_transcription.text if sc.output_transcription else None
            if sc.model_turn is not None or said:
                self.model_output(now)
                log.model_output()
            if said:
                log.bot_said(said)
            if sc.input_transcription is not None and sc.input_transcription.text:
                log.caller_said(sc.input_transcription.text)
            if sc.interrupted or sc.generation_complete or sc.turn_complete:
                complete = not sc.interrupted
                self.model_done(now, complete=complete)
                log.model_done(complete=complete)
        calls = message.tool_call.function_calls if message.tool_call else None
        if calls:
            self.model_output(now)
            log.model_output()
            self.tools_pending.update(c.id or "" for c in calls)
        cancelled = message.tool_call_cancellation
        if cancelled is not None:
            self.tools_pending.difference_update(cancelled.ids or ())

    def connected(self, now: float) -> None:
        """A new connection opened: nothing pending on it."""
        self._connected_at = now
        self._generating_since = None
        self.deadline = None
        self.tools_pending.clear()

    @property
    def idle(self) -> bool:
        """The model is not generating and no tool call is pending."""
        return self._generating_since is None and not self.tools_pending

    def model_output(self, now: float) -> None:
        """Model audio, transcript or a tool call arrived."""
        if self._generating_since is None:
            self._generating_since = now

    def model_done(self, now: float, *, complete: bool) -> None:
        """The answer finished generating (``complete``) or was interrupted."""
        since, self._generating_since = self._generating_since, None
        if complete and since is not None:
            self.longest_answer = max(self.longest_answer, now - since)

    def go_away(self, now: float, time_left: float) -> float:
        """A goAway: learn the connection lifetime; the moment the switch must happen by."""
        if time_left > 0:
            lifetime = now - self._connected_at + time_left
            self.lifetime = lifetime if self.lifetime is None else min(self.lifetime, lifetime)
        margin = min(MARGIN_SECS * self._scale, MARGIN_FRACTION * time_left)
        self.deadline = now + time_left - margin
        return self.deadline

    def _answer_allowance(self) -> float:
        if not self.longest_answer:
            return DEFAULT_ANSWER_SECS
        return self.longest_answer + ANSWER_SLACK_SECS

    def restart_on_go_away(self, now: float, time_left: float) -> bool:
        """Switch now: an answer just began and the warning is shorter than an answer."""
        since = self._generating_since
        if since is None or self.tools_pending or now - since > RESTART_WINDOW_SECS:
            return False
        return time_left < self._answer_allowance()

    def switch_at_turn_end(self, now: float) -> bool:
        """The caller's turn ended: switch now so the next connection answers it whole."""
        if self.tools_pending:
            return False
        if self.deadline is not None:
            answering = self._generating_since is not None
            return not (answering and self.deadline - now >= self._answer_allowance())
        if self.lifetime is None or not self.longest_answer:
            return False
        margin = min(MARGIN_SECS * self._scale, MARGIN_FRACTION * self.lifetime)
        left = self._connected_at + self.lifetime - margin - now
        return left < self._answer_allowance()
