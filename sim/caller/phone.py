"""The simulated phone's playback buffer: bot audio plays in order at 8 kHz real time.

Like Twilio's, the buffer does not play audio the moment it arrives: when it has run dry, new
audio waits ``playout_delay_secs`` (Twilio's own buffering) before it plays; audio that arrives
while earlier audio is still playing is queued straight behind it. Marks come back once the
audio queued before them has played, and all at once on ``clear``.
"""

from __future__ import annotations

import math

from sim.caller.plan import FRAME_BYTES, SAMPLE_RATE_HZ, ULAW_SILENCE

_SILENT_FRAME = bytes([ULAW_SILENCE]) * FRAME_BYTES


class _Playout:
    """What the phone plays, by sample position, kept only as far back as it is still read."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.base = 0  # sample position of data[0]

    def write(self, pos: int, ulaw: bytes) -> None:
        end = self.base + len(self.data)
        if pos > end:
            self.data.extend(bytes([ULAW_SILENCE]) * (pos - end))
        self.data.extend(ulaw)

    def truncate(self, pos: int) -> None:
        del self.data[max(0, pos - self.base) :]

    def read(self, pos: int) -> bytes:
        """One frame from ``pos`` (silence where nothing played); forgets what lies before it."""
        i = pos - self.base
        if i > 0:
            del self.data[: min(i, len(self.data))]
            self.base = pos
            i = 0
        chunk = bytes(self.data[max(0, i) : max(0, i + FRAME_BYTES)])
        if len(chunk) < FRAME_BYTES:
            return chunk + _SILENT_FRAME[len(chunk) :] if chunk else _SILENT_FRAME
        return chunk


class PhoneBuffer:
    """The phone's playback buffer: received audio plays in order at 8 kHz real time.

    Times are absolute (the driver's clock). ``busy_until`` is when the queued audio will have
    played; ``audible_until`` is when its last audible part will have played.

    Args:
        t_start: when the stream started (position 0 of the recording).
        record: keep everything played in ``recording`` (µ-law 8 kHz).
        playout_delay_secs: how long audio arriving at an empty buffer waits before it plays.
        keep_playout: remember what played so :meth:`played_frame` can return it (echo).
    """

    def __init__(
        self,
        t_start: float,
        record: bool = False,
        playout_delay_secs: float = 0.0,
        keep_playout: bool = False,
    ) -> None:
        self.t_start = t_start
        self.playout_delay_secs = playout_delay_secs
        self.busy_until = -math.inf
        self._run_start = -math.inf  # when the audio queued since the buffer was dry starts
        self.audible_until = -math.inf
        self.marks: list[tuple[float, str]] = []
        self.recording: bytearray | None = bytearray() if record else None
        self._playout: _Playout | None = _Playout() if keep_playout else None
        self.played_secs = 0.0
        self.cleared_secs = 0.0

    def push(self, ulaw: bytes, now: float, audible: bool) -> tuple[float, float]:
        """Queue audio received at ``now``; returns (play start, seconds the buffer was dry)."""
        dur = len(ulaw) / SAMPLE_RATE_HZ
        if self.busy_until > now:
            start, dry = self.busy_until, 0.0
        else:
            start, dry = now + self.playout_delay_secs, now - self.busy_until
            self._run_start = start
        pos = round((start - self.t_start) * SAMPLE_RATE_HZ)
        if self.recording is not None:
            if pos > len(self.recording):
                self.recording.extend(bytes([ULAW_SILENCE]) * (pos - len(self.recording)))
            self.recording.extend(ulaw)
        if self._playout is not None:
            self._playout.write(pos, ulaw)
        self.busy_until = start + dur
        self.played_secs += dur
        if audible:
            self.audible_until = self.busy_until
        return start, dry

    def unplayed_secs(self, now: float) -> float:
        """Seconds of received audio not yet played at ``now``."""
        return max(0.0, self.busy_until - max(now, self._run_start))

    def empty(self, now: float) -> bool:
        """Whether nothing is left to play (or waiting to play) at ``now``."""
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
            unplayed = self.unplayed_secs(now)
            self.cleared_secs += unplayed
            self.played_secs -= unplayed
            pos = max(0, round((now - self.t_start) * SAMPLE_RATE_HZ))
            if self.recording is not None:
                del self.recording[pos:]
            if self._playout is not None:
                self._playout.truncate(pos)
            self.busy_until = now
        self.audible_until = min(self.audible_until, now)
        names = [n for _, n in self.marks]
        self.marks = []
        return names

    def played_frame(self, t_from: float) -> bytes:
        """The 20 ms of audio the phone played from ``t_from`` (µ-law; silence where none).

        Needs ``keep_playout``; reading forgets what played before ``t_from``, so call it with
        times that only move forward.
        """
        if self._playout is None:
            return _SILENT_FRAME
        return self._playout.read(round((t_from - self.t_start) * SAMPLE_RATE_HZ))
