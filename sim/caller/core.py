"""The simulated Twilio caller's protocol and timing logic, sans-IO.

No sockets and no clock here: the driver (asyncio in :mod:`sim.caller.driver`, gevent in
``deploy/locustfile.py``) passes every received text message and a 20 ms tick in with an explicit
``now`` (seconds, any monotonic clock) and sends the JSON strings it gets back. The metrics it
fills in are defined in :mod:`sim.caller.result`; the phone's playback model is
:mod:`sim.caller.phone`; what the line adds to the caller's audio is :mod:`sim.caller.line_noise`;
every message received is checked as Twilio checks it (:mod:`sim.caller.twilio_checks`), and one
Twilio would drop is dropped and counted. The plan's steps are walked by
:class:`sim.caller.steps.PlanSteps`; the media frames sent are built by
:class:`sim.caller.microphone.Microphone`.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

from sim.caller.dead_air import DeadAirTracker
from sim.caller.line_noise import bank_for, describe_line, echo_gain
from sim.caller.microphone import Microphone, Speech
from sim.caller.phone import PhoneBuffer
from sim.caller.plan import FRAME_BYTES, FRAME_SECS, SAMPLE_RATE_HZ, CallPlan, ulaw_rms
from sim.caller.result import CallEvent, CallResult, percentile
from sim.caller.steps import BargeInState
from sim.caller.twilio_checks import BadMessage, check_message
from sim.caller.twilio_webhook import Twiml, new_sid

__all__ = ["CallEvent", "CallResult", "CallerCore", "PhoneBuffer", "percentile"]

# The caller's own generator: the process's global one belongs to whoever hosts the caller (a
# property-based test seeds and watches it).
_RNG = random.Random()


class CallerCore(Microphone):
    """One simulated Twilio Media Stream, driven by ``open``/``on_message``/``on_tick``.

    Args:
        plan: what the caller does.
        t0: driver-clock time the webhook POST started (the timeline's zero).
        call_sid, account_sid, stream_sid: identifiers used in the messages.
        custom_parameters: the TwiML's ``<Parameter>`` values, sent in ``start``.
        record: keep the played audio (``buffer.recording``, µ-law 8 kHz).
        twiml_say: text of a ``<Say>`` after ``</Connect>`` (reported when the server hangs up).
        twiml_say_attrs: that ``<Say>``'s ``voice`` and ``language`` attributes.
    """

    def __init__(
        self,
        plan: CallPlan,
        *,
        t0: float,
        call_sid: str,
        account_sid: str,
        stream_sid: str,
        custom_parameters: dict[str, str] | None = None,
        record: bool = False,
        twiml_say: str | None = None,
        twiml_say_attrs: tuple[str | None, str | None] | None = None,
    ) -> None:
        self.plan = plan
        self.t0 = t0
        self.account_sid = account_sid
        self.res = CallResult(
            call_sid, stream_sid=stream_sid, custom_parameters=dict(custom_parameters or {})
        )
        self.res.twiml_say = twiml_say
        self.res.twiml_say_voice, self.res.twiml_say_language = twiml_say_attrs or (None, None)
        self._record = record
        line = plan.line_noise
        self.res.line = {**line.to_dict(), "playout_delay_ms": plan.playout_delay_secs * 1000}
        self._noise = bank_for(line)
        self._noise_i = _RNG.randrange(len(self._noise.payloads))  # calls do not line up
        self._echo_gain = echo_gain(line.echo_db)
        self._echo_lag = FRAME_SECS + line.echo_delay_ms / 1000
        self.buffer = self._new_buffer(t0)
        self.done = False
        self.closed = False
        self._seq = 0
        self._chunk = 0
        self._last_ts = 0
        self.t_start: float | None = None
        self._step = 0
        self._step_started: float | None = None
        self._step_state = 0
        self._speech: Speech | None = None
        self._pending_response: float | None = None
        self._reply_audible_start: float | None = None
        self._barge: BargeInState | None = None
        self._last_media_at: float | None = None
        self._reply_boundary = True
        self._interarrival: list[float] = []
        self.dead_air = DeadAirTracker(t0)
        self._ended_at: float | None = None

    # -- helpers -------------------------------------------------------------------------

    @classmethod
    def for_twiml(
        cls,
        plan: CallPlan,
        twiml: Twiml,
        *,
        t0: float,
        call_sid: str,
        account_sid: str,
        record: bool = False,
    ) -> CallerCore:
        """The stream a Twilio call opens after reading ``twiml`` (a fresh stream SID)."""
        return cls(
            plan,
            t0=t0,
            call_sid=call_sid,
            account_sid=account_sid,
            stream_sid=new_sid("MZ"),
            custom_parameters=twiml.parameters,
            record=record,
            twiml_say=twiml.say_after,
            twiml_say_attrs=(twiml.say_voice, twiml.say_language),
        )

    def _new_buffer(self, t_start: float) -> PhoneBuffer:
        return PhoneBuffer(
            t_start, self._record, self.plan.playout_delay_secs, self._echo_gain is not None
        )

    def event(self, now: float, kind: str, detail: str = "") -> None:
        """Append a timeline event."""
        self.res.events.append(CallEvent(round(now - self.t0, 4), kind, detail))

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _msg(self, event: str, body_key: str | None = None, body: Any = None) -> str:
        m: dict[str, Any] = {
            "event": event,
            "sequenceNumber": str(self._next_seq()),
            "streamSid": self.res.stream_sid,
        }
        if body_key:
            m[body_key] = body
        return json.dumps(m, separators=(",", ":"))

    # -- driver API ----------------------------------------------------------------------
    def open(self, now: float) -> list[str]:
        """The ``connected`` and ``start`` messages, sent as soon as the stream is open."""
        self.t_start = now
        self.buffer = self._new_buffer(now)
        self.res.setup_ms = (now - self.t0) * 1000
        self.event(now, "stream", f"connected, start sent (streamSid {self.res.stream_sid})")
        self.event(now, "line", describe_line(self.res.line))
        connected = '{"event":"connected","protocol":"Call","version":"1.0.0"}'
        start = self._msg(
            "start",
            "start",
            {
                "streamSid": self.res.stream_sid,
                "accountSid": self.account_sid,
                "callSid": self.res.call_sid,
                "tracks": ["inbound"],
                "customParameters": self.res.custom_parameters,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        )
        self._step_started = now
        self.dead_air.call_started(now)
        return [connected, start]

    def on_message(self, text: str, now: float) -> list[str]:
        """Handle one message from the server; returns messages to send back (mark echoes).

        A message Twilio would drop (see :mod:`sim.caller.twilio_checks`) is dropped and counted.
        """
        try:
            kind, body = check_message(text, self.res.stream_sid)
        except BadMessage as e:
            self._protocol_error(now, e)
            return []
        if kind == "media":
            self._on_media(body, now)
            return []
        if kind == "clear":
            return self._on_clear(now)
        if self.buffer.mark(body, now):
            return [self._echo(body)]
        return []

    def on_binary(self, size: int, now: float) -> None:
        """The server sent a binary frame: Twilio drops it (error 31950); counted."""
        self._protocol_error(now, BadMessage("binary", f"a binary frame of {size} bytes"))

    def _protocol_error(self, now: float, e: BadMessage) -> None:
        errors = self.res.protocol_errors
        errors[e.kind] = errors.get(e.kind, 0) + 1
        if errors[e.kind] == 1:  # the timeline notes each kind once
            self.event(
                now,
                "protocol",
                f"dropped {e.kind} (Twilio error {e.twilio_error}): {e.detail}; "
                "further ones are only counted",
            )

    def _echo(self, name: str) -> str:
        self.res.marks_echoed += 1
        return self._msg("mark", "mark", {"name": name})

    def _on_media(self, ulaw: bytes, now: float) -> None:
        res = self.res
        audible = ulaw_rms(ulaw) > self.plan.silence_rms
        res.audio_received_secs += len(ulaw) / SAMPLE_RATE_HZ
        last = self._last_media_at
        same_reply = (
            not self._reply_boundary
            and last is not None
            and now - last < self.plan.reply_break_secs
        )
        busy_before, audible_before = self.buffer.busy_until, self.buffer.audible_until
        start, dry = self.buffer.push(ulaw, now, audible)
        if same_reply and last is not None:
            self._interarrival.append(now - last)
            if dry >= self.plan.gap_min_secs and busy_before > -math.inf:
                res.gaps_ms.append(dry * 1000)
        self._last_media_at = now
        self._reply_boundary = False
        if not audible:
            return
        self._note_dead_air(now, self.dead_air.bot_audio(start, audible_before))
        # latencies run to when the caller hears the audio, not to when it arrived
        if res.greeting_ms is None and self.t_start is not None:
            res.greeting_ms = (start - self.t_start) * 1000
            res.setup_to_audio_ms = (start - self.t0) * 1000
            self.event(now, "greeting", f"first audible bot audio, heard {start - now:.3f} s later")
        if self._reply_audible_start is None:
            self._reply_audible_start = start
        if self._pending_response is not None:
            lat = (start - self._pending_response) * 1000
            res.response_latencies_ms.append(lat)
            self._pending_response = None
            self.event(now, "reply", f"first audible reply audio, response latency {lat:.0f} ms")
        sp = self._speech
        if sp is not None and sp.stale_window:
            res.stale_frames += math.ceil(len(ulaw) / FRAME_BYTES)

    def _on_clear(self, now: float) -> list[str]:
        res = self.res
        res.clears += 1
        marks = self.buffer.clear(now)
        self._reply_boundary = True
        detail = f"clear received ({len(marks)} pending marks returned)"
        b = self._barge
        if b is not None and b.clear_at is None:
            b.clear_at = now
            res.bargein_to_clear_ms.append((now - b.start) * 1000)
            res.bargein_to_silence_ms.append((now - b.start) * 1000)
            detail += f"; barge-in to clear {(now - b.start) * 1000:.0f} ms"
            self._barge = None
        if self._speech is not None:
            self._speech.stale_window = True
        self.event(now, "clear", detail)
        return [self._echo(n) for n in marks]

    def on_closed(self, now: float, code: int | None, reason: str) -> None:
        """The server closed the WebSocket (or the connection dropped)."""
        self.closed = True
        if self._ended_at is None:
            self._ended_at = now
        self.res.duration_secs = now - (self.t_start if self.t_start is not None else self.t0)
        if self.done:
            return
        self.done = True
        how = f"server closed the stream ({code} {reason})".replace(" )", ")")
        if self.res.twiml_say:
            how += f"; Twilio would then play the TwiML <Say>: {self.res.twiml_say!r}"
        self.res.end_reason = how
        if code not in (None, 1000, 1001, 1005):
            self.fail(now, f"stream: closed {code} {reason}".strip())
        self.event(now, "end", how)

    def fail(self, now: float, failure: str) -> None:
        """Mark the call failed (first failure wins)."""
        if self.res.ok:
            self.res.ok = False
            self.res.failure = failure
            self.event(now, "failure", failure)
        self.done = True
        if self._ended_at is None:
            self._ended_at = now
        if not self.res.end_reason:
            self.res.end_reason = f"error: {failure}"

    def on_tick(self, now: float) -> list[str]:
        """Called every 20 ms on the send deadline: the frame to send and anything else due."""
        if self.done or self.t_start is None:
            return []
        out = [self._echo(n) for n in self.buffer.due_marks(now)]
        self._check_bargein(now)
        if now - self.t_start >= self.plan.hangup_after_secs:
            return out + self._hangup(
                now, f"caller hung up (time limit {self.plan.hangup_after_secs:g} s)"
            )
        extra: list[str] = []
        while self._speech is None and not self.done:
            if not self._run_step(now, extra):
                break
        if self.done:
            return out + extra
        return out + extra + [self._frame(now)]

    def _hangup(self, now: float, how: str) -> list[str]:
        self.done = True
        if self._ended_at is None:
            self._ended_at = now
        self.res.end_reason = how
        self.res.duration_secs = now - (self.t_start or now)
        self.event(now, "end", how)
        stop = {"accountSid": self.account_sid, "callSid": self.res.call_sid}
        return [self._msg("stop", "stop", stop)]

    def result(self, now: float) -> CallResult:
        """Finish the metrics and return the :class:`CallResult`."""
        res = self.res
        if self._pending_response is not None:
            res.replies_missed += 1
            self._pending_response = None
        if self._barge is not None:
            res.bargeins_unanswered += 1
            self._barge = None
        if not res.duration_secs and self.t_start is not None:
            res.duration_secs = now - self.t_start
        res.audio_played_secs = self.buffer.played_secs - self.buffer.unplayed_secs(now)
        res.audio_cleared_secs = self.buffer.cleared_secs
        self._finish_dead_air(now)
        if self._interarrival:
            res.interarrival_p99_ms = (percentile(self._interarrival, 99) or 0.0) * 1000
            res.interarrival_max_ms = max(self._interarrival) * 1000
        return res
