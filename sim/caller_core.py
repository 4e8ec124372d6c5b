"""The simulated Twilio caller's protocol and timing logic, sans-IO.

No sockets and no clock here: the driver (asyncio in :mod:`sim.caller`, gevent in
``deploy/locustfile.py``) passes every received text message and a 20 ms tick in with an explicit
``now`` (seconds, any monotonic clock) and sends the JSON strings it gets back. The metrics it
fills in are defined in :mod:`sim.call_result`; the phone's playback model is :mod:`sim.phone`.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from typing import Any

from sim.call_result import CallEvent, CallResult, percentile
from sim.caller_plan import (
    FRAME_BYTES,
    SAMPLE_RATE_HZ,
    SILENCE_PAYLOAD,
    BargeIn,
    CallPlan,
    Dtmf,
    Hangup,
    Pause,
    Say,
    Utterance,
    WaitForGreeting,
    WaitForReply,
    ulaw_rms,
)
from sim.phone import PhoneBuffer
from sim.twilio_webhook import Twiml, new_sid

__all__ = ["CallEvent", "CallResult", "CallerCore", "PhoneBuffer", "percentile"]

BARGEIN_QUIET_SECS = 0.3
_MEDIA = (
    '{"event":"media","sequenceNumber":"%d","streamSid":"%s","media":'
    '{"track":"inbound","chunk":"%d","timestamp":"%d","payload":"%s"}}'
)


@dataclass
class _Speech:
    utterance: Utterance
    kind: str  # "say" | "bargein"
    index: int = 0
    stale_window: bool = False


@dataclass
class _BargeIn:
    start: float
    timeout_secs: float
    clear_at: float | None = None


class CallerCore:
    """One simulated Twilio Media Stream, driven by ``open``/``on_message``/``on_tick``.

    Args:
        plan: what the caller does.
        t0: driver-clock time the webhook POST started (the timeline's zero).
        call_sid, account_sid, stream_sid: identifiers used in the messages.
        custom_parameters: the TwiML's ``<Parameter>`` values, sent in ``start``.
        record: keep the played audio (``buffer.recording``, µ-law 8 kHz).
        twiml_say: text of a ``<Say>`` after ``</Connect>`` (reported when the server hangs up).
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
    ) -> None:
        self.plan = plan
        self.t0 = t0
        self.account_sid = account_sid
        self.res = CallResult(
            call_sid, stream_sid=stream_sid, custom_parameters=dict(custom_parameters or {})
        )
        self.res.twiml_say = twiml_say
        self._record = record
        self.buffer = PhoneBuffer(t0, record)
        self.done = False
        self.closed = False
        self._seq = 0
        self._chunk = 0
        self.t_start: float | None = None
        self._step = 0
        self._step_started: float | None = None
        self._step_state = 0
        self._speech: _Speech | None = None
        self._pending_response: float | None = None
        self._reply_audible_start: float | None = None
        self._barge: _BargeIn | None = None
        self._last_media_at: float | None = None
        self._reply_boundary = True
        self._interarrival: list[float] = []

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
        self.buffer = PhoneBuffer(now, self._record)
        self.res.setup_ms = (now - self.t0) * 1000
        self.event(now, "stream", f"connected, start sent (streamSid {self.res.stream_sid})")
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
        return [connected, start]

    def on_message(self, text: str, now: float) -> list[str]:
        """Handle one message from the server; returns messages to send back (mark echoes)."""
        try:
            msg = json.loads(text)
            kind = msg["event"]
        except (ValueError, KeyError, TypeError):
            self.event(now, "protocol", f"ignored a message that is not Twilio JSON: {text[:60]!r}")
            return []
        if kind == "media":
            self._on_media(base64.b64decode(msg["media"]["payload"]), now)
            return []
        if kind == "clear":
            return self._on_clear(now)
        if kind == "mark":
            name = str(msg.get("mark", {}).get("name", ""))
            if self.buffer.mark(name, now):
                return [self._echo(name)]
            return []
        self.event(now, "protocol", f"unknown event {kind!r} from the server")
        return []

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
        busy_before = self.buffer.busy_until
        start, dry = self.buffer.push(ulaw, now, audible)
        if same_reply and last is not None:
            self._interarrival.append(now - last)
            if dry >= self.plan.gap_min_secs and busy_before > -math.inf:
                res.gaps_ms.append(dry * 1000)
        self._last_media_at = now
        self._reply_boundary = False
        if not audible:
            return
        if res.greeting_ms is None and self.t_start is not None:
            res.greeting_ms = (now - self.t_start) * 1000
            res.setup_to_audio_ms = (now - self.t0) * 1000
            self.event(now, "greeting", "first audible bot audio")
        if self._reply_audible_start is None:
            self._reply_audible_start = start
        if self._pending_response is not None:
            lat = (now - self._pending_response) * 1000
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

    # -- sending -------------------------------------------------------------------------
    def _frame(self, now: float) -> str:
        self._chunk += 1
        sp = self._speech
        payload = SILENCE_PAYLOAD
        if sp is not None:
            payload = sp.utterance.payloads[sp.index]
            sp.index += 1
            self.res.audio_sent_secs += FRAME_BYTES / SAMPLE_RATE_HZ
            if sp.index >= len(sp.utterance.payloads):
                self._end_speech(now)
        self._seq += 1
        return _MEDIA % (self._seq, self.res.stream_sid, self._chunk, self._chunk * 20, payload)

    def _start_speech(self, now: float, utt: Utterance, kind: str) -> None:
        if self._pending_response is not None:
            self.res.replies_missed += 1
            self.event(now, "no-reply", "previous utterance got no audible reply")
            self._pending_response = None
        self._speech = _Speech(utt, kind)
        self.event(now, "say" if kind == "say" else "barge-in", f"{utt.name} starts")

    def _end_speech(self, now: float) -> None:
        sp = self._speech
        assert sp is not None
        self._speech = None
        self._reply_boundary = True
        self._reply_audible_start = None
        self.event(now, "said", f"{sp.utterance.name} ended ({sp.utterance.duration_secs:.2f} s)")
        if self.buffer.audible_until > now and not sp.stale_window:
            self.res.talkovers += 1
            self.event(now, "talkover", "bot still speaking when the caller stopped")
        else:
            self._pending_response = now

    def _hangup(self, now: float, how: str) -> list[str]:
        self.done = True
        self.res.end_reason = how
        self.res.duration_secs = now - (self.t_start or now)
        self.event(now, "end", how)
        stop = {"accountSid": self.account_sid, "callSid": self.res.call_sid}
        return [self._msg("stop", "stop", stop)]

    # -- plan ----------------------------------------------------------------------------
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
                    self._barge = _BargeIn(now, step.timeout_secs)
                else:
                    self.event(now, "barge-in", "bot already quiet: spoken over silence")
                self._start_speech(now, step.audio, "bargein")
                return False
            if elapsed >= step.timeout_secs:
                self.event(now, "timeout", "barge-in skipped: no bot audio to talk over")
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
            if elapsed >= step.secs:
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
        res.audio_played_secs = self.buffer.played_secs - max(0.0, self.buffer.busy_until - now)
        res.audio_cleared_secs = self.buffer.cleared_secs
        if self._interarrival:
            res.interarrival_p99_ms = (percentile(self._interarrival, 99) or 0.0) * 1000
            res.interarrival_max_ms = max(self._interarrival) * 1000
        return res
