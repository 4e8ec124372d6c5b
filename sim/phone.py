"""The simulated phone's playback buffer: bot audio plays in order at 8 kHz real time."""

from __future__ import annotations

import math

from sim.caller_plan import SAMPLE_RATE_HZ, ULAW_SILENCE


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
