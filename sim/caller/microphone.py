"""What the simulated caller's microphone sends: one 20 ms media frame per tick.

:class:`Microphone` is the part of :class:`sim.caller.core.CallerCore` that builds the inbound
``media`` messages: the current utterance (with the line's noise under it,
:func:`sim.caller.line_noise.speech_mix`) or the line noise between utterances, the bot's audio
leaking back from the handset when the line has echo, and Twilio's sequence numbers, chunk
numbers and timestamps. It starts and ends the caller's speech: a reply is then owed, or the
caller talked over the bot. It reads the state the core keeps (the phone buffer, the plan, the
result) and walks the plan through :class:`sim.caller.steps.PlanSteps`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.caller.line_noise import SILENT_FRAME, FrameSet, mix_echo, speech_mix
from sim.caller.plan import FRAME_BYTES, SAMPLE_RATE_HZ, Utterance
from sim.caller.steps import PlanSteps

_MEDIA = (
    '{"event":"media","sequenceNumber":"%d","streamSid":"%s","media":'
    '{"track":"inbound","chunk":"%d","timestamp":"%d","payload":"%s"}}'
)


@dataclass
class Speech:
    """An utterance being sent, frame by frame."""

    utterance: Utterance
    frames: FrameSet  # the utterance as sent: with the line's noise under it
    kind: str  # "say" | "bargein"
    index: int = 0
    stale_window: bool = False


class Microphone(PlanSteps):
    """Builds the caller's media frames; mixed into :class:`sim.caller.core.CallerCore`."""

    t_start: float | None
    _seq: int
    _chunk: int
    _last_ts: int
    _noise: FrameSet
    _noise_i: int
    _echo_gain: float | None
    _echo_lag: float
    _speech: Speech | None
    _reply_boundary: bool

    def _frame(self, now: float) -> str:
        """The media message for the 20 ms the caller's microphone picked up until ``now``."""
        self._chunk += 1
        sp = self._speech
        if sp is None:  # line noise (or digital silence) between utterances
            frames, i = self._noise, self._noise_i
            self._noise_i = i + 1 if i + 1 < len(frames.payloads) else 0
        else:
            frames, i = sp.frames, sp.index
            sp.index += 1
            self.res.audio_sent_secs += FRAME_BYTES / SAMPLE_RATE_HZ
            if sp.index >= len(frames.payloads):
                self._end_speech(now)
        payload = frames.payloads[i]
        if self._echo_gain is not None:  # the bot as heard, leaking back from the handset
            echo = self.buffer.played_frame(now - self._echo_lag)
            if echo != SILENT_FRAME:
                payload = mix_echo(frames.raw[i], echo, self._echo_gain)
        # Twilio's timestamp follows the clock (ms since the stream started), first one above 0
        since = now - self.t_start if self.t_start is not None else 0.0
        ts = max(round(since * 1000), self._last_ts + 1)
        self._last_ts = ts
        self._seq += 1
        return _MEDIA % (self._seq, self.res.stream_sid, self._chunk, ts, payload)

    def _start_speech(self, now: float, utt: Utterance, kind: str) -> None:
        if self._pending_response is not None:
            self.res.replies_missed += 1
            self.event(now, "no-reply", "previous utterance got no audible reply")
            self._pending_response = None
        line = self.plan.line_noise
        self._speech = Speech(utt, speech_mix(utt, line.dbfs, line.color), kind)
        self._note_dead_air(now, self.dead_air.caller_speaks(now, self.buffer.audible_until))
        self.event(now, "say" if kind == "say" else "barge-in", f"{utt.name} starts")

    def _end_speech(self, now: float) -> None:
        sp = self._speech
        assert sp is not None
        self._speech = None
        self._reply_boundary = True
        self._reply_audible_start = None
        self.dead_air.caller_stopped(now)
        self.event(now, "said", f"{sp.utterance.name} ended ({sp.utterance.duration_secs:.2f} s)")
        if self.buffer.audible_until > now and not sp.stale_window:
            self.res.talkovers += 1
            self.event(now, "talkover", "bot still speaking when the caller stopped")
        else:
            self._pending_response = now
