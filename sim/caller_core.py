"""The simulated Twilio caller's protocol and timing logic, sans-IO.

No sockets and no clock here: the driver (asyncio in :mod:`sim.caller`, gevent in
``deploy/locustfile.py``) passes every received text message and a 20 ms tick in with an explicit
``now`` (seconds, any monotonic clock) and sends the JSON strings it gets back.

Metric definitions (all times in ms; "audible" = µ-law frame decoded to PCM16 with RMS above the
plan's ``silence_rms``):

- ``setup_ms``: webhook POST start -> ``start`` message sent.
- ``setup_to_audio_ms``: webhook POST start -> first audible bot audio received.
- ``greeting_ms``: ``start`` sent -> first audible bot audio received.
- ``response_latencies_ms``: per caller utterance, its last frame sent -> first audible bot audio
  received after it. Not measured when the bot was still audibly playing when the caller stopped
  (counted in ``talkovers``); an utterance with no audible reply before the next utterance or the
  end of the call counts in ``replies_missed``.
- ``bargein_to_clear_ms``: first frame of a barge-in utterance sent (while bot audio was playing)
  -> ``clear`` received. ``bargein_to_silence_ms``: same start -> the phone stopped playing bot
  audio (at ``clear``, or when the buffer ran out of audible audio and stayed quiet 300 ms).
  A barge-in with neither within its ``timeout_secs`` counts in ``bargeins_unanswered``.
- ``stale_frames``: 20 ms frames of audible bot audio received after a ``clear`` and before the
  caller's utterance in progress at that ``clear`` ended (the bot must not talk over the caller).
- ``gaps_ms``: playback underruns inside a bot reply: the phone buffer ran dry for at least
  ``gap_min_secs`` and more audio of the same reply arrived later. Bot audio belongs to the same
  reply unless a ``clear``, the end of a caller utterance, or ``reply_break_secs`` of no bot audio
  came in between. ``interarrival_p99_ms`` / ``interarrival_max_ms``: time between consecutive bot
  media messages within a reply.
- ``audio_received_secs`` / ``audio_played_secs`` / ``audio_cleared_secs``: bot audio delivered,
  actually played by the phone, and discarded by ``clear``.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from sim.caller_plan import (
    FRAME_BYTES,
    SAMPLE_RATE_HZ,
    SILENCE_PAYLOAD,
    ULAW_SILENCE,
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

BARGEIN_QUIET_SECS = 0.3
_MEDIA = (
    '{"event":"media","sequenceNumber":"%d","streamSid":"%s","media":'
    '{"track":"inbound","chunk":"%d","timestamp":"%d","payload":"%s"}}'
)


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100, linear interpolation) or None for no values."""
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


@dataclass
class CallEvent:
    """One line of the caller's timeline: ``t`` seconds after the webhook POST started."""

    t: float
    kind: str
    detail: str = ""


@dataclass
class CallResult:
    """What one simulated caller experienced (see the module docstring for the definitions)."""

    call_sid: str
    ok: bool = True
    failure: str | None = None
    end_reason: str = ""
    stream_sid: str = ""
    custom_parameters: dict[str, str] = field(default_factory=dict)
    twiml_say: str | None = None
    setup_ms: float | None = None
    setup_to_audio_ms: float | None = None
    greeting_ms: float | None = None
    response_latencies_ms: list[float] = field(default_factory=list)
    replies_missed: int = 0
    talkovers: int = 0
    bargeins: int = 0
    bargein_to_clear_ms: list[float] = field(default_factory=list)
    bargein_to_silence_ms: list[float] = field(default_factory=list)
    bargeins_unanswered: int = 0
    clears: int = 0
    stale_frames: int = 0
    marks_echoed: int = 0
    gaps_ms: list[float] = field(default_factory=list)
    interarrival_p99_ms: float | None = None
    interarrival_max_ms: float | None = None
    audio_sent_secs: float = 0.0
    audio_received_secs: float = 0.0
    audio_played_secs: float = 0.0
    audio_cleared_secs: float = 0.0
    duration_secs: float = 0.0
    send_lateness_max_ms: float = 0.0
    events: list[CallEvent] = field(default_factory=list)

    @property
    def gaps(self) -> list[float]:
        """Alias of ``gaps_ms``."""
        return self.gaps_ms

    @property
    def gap_max_ms(self) -> float:
        """Longest playback underrun inside a reply (0 when none)."""
        return max(self.gaps_ms, default=0.0)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (events as ``{"t", "kind", "detail"}``)."""
        d = asdict(self)
        d["gap_max_ms"] = self.gap_max_ms
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CallResult:
        """Inverse of :meth:`to_dict`."""
        d = {k: v for k, v in d.items() if k != "gap_max_ms"}
        d["events"] = [CallEvent(**e) for e in d.get("events", [])]
        return cls(**d)


class PhoneBuffer:
    """The phone's playback buffer: received audio plays in order at 8 kHz real time.

    Times are absolute (the driver's clock). ``busy_until`` is when the queued audio will have
    played; ``audible_until`` is when its last audible part will have played.
    """

    def __init__(self, t_start: float, record: bool = False) -> None:
        self.t_start = t_start
        self.busy_until = -math.inf
        self.audible_until = -math.inf
        self.marks: list[tuple[float, str]] = []
        self.recording: bytearray | None = bytearray() if record else None
        self.played_secs = 0.0
        self.cleared_secs = 0.0

    def push(self, ulaw: bytes, now: float, audible: bool) -> tuple[float, float]:
        """Queue audio received at ``now``; returns (play start, seconds the buffer was dry)."""
        dur = len(ulaw) / SAMPLE_RATE_HZ
        dry = max(0.0, now - self.busy_until)
        start = max(now, self.busy_until)
        if self.recording is not None:
            pos = round((start - self.t_start) * SAMPLE_RATE_HZ)
            if pos > len(self.recording):
                self.recording.extend(bytes([ULAW_SILENCE]) * (pos - len(self.recording)))
            self.recording.extend(ulaw)
        self.busy_until = start + dur
        self.played_secs += dur
        if audible:
            self.audible_until = self.busy_until
        return start, dry

    def empty(self, now: float) -> bool:
        """Whether nothing is left to play at ``now``."""
        return self.busy_until <= now

    def mark(self, name: str, now: float) -> bool:
        """Queue a mark behind the buffered audio; True when it is due at once (buffer empty)."""
        if self.empty(now):
            return True
        self.marks.append((self.busy_until, name))
        return False

    def due_marks(self, now: float) -> list[str]:
        """Names of marks whose preceding audio has played by ``now`` (removed from the queue)."""
        due = [n for t, n in self.marks if t <= now]
        if due:
            self.marks = [(t, n) for t, n in self.marks if t > now]
        return due

    def clear(self, now: float) -> list[str]:
        """Drop unplayed audio; returns every pending mark (Twilio echoes them all at once)."""
        if self.busy_until > now:
            self.cleared_secs += self.busy_until - now
            self.played_secs -= self.busy_until - now
            if self.recording is not None:
                del self.recording[max(0, round((now - self.t_start) * SAMPLE_RATE_HZ)) :]
            self.busy_until = now
        self.audible_until = min(self.audible_until, now)
        names = [n for _, n in self.marks]
        self.marks = []
        return names


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
