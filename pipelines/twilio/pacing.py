"""Real-time pacing of outgoing audio chunks on absolute deadlines.

Twilio plays whatever it is sent in order and keeps playing buffered audio until it gets a
``clear``, so the output sends audio at real-time pace with a small lead: a barge-in then only has
to discard a few tens of milliseconds on Twilio's side. ``Pacer`` holds the arithmetic only (no
clock, no sleeping) so it can be tested with a fake clock.

Rules:
    * The playout clock advances by exactly one chunk per chunk sent (``deadline += chunk``),
      so timer jitter does not accumulate as drift.
    * The sender may run at most ``max_lead_secs`` ahead of playout.
    * After a late tick (event loop stalled) the late chunks are sent at once until the clock has
      caught up, rather than restarting the clock; Pipecat's FastAPI transport restarts it, which
      turns every stall into a permanent delay and an under-run on Twilio's side.
    * The clock restarts only when the bot was actually silent (playout ran dry more than
      ``idle_reset_secs`` ago) or after ``reset()`` (an interruption).
"""

from __future__ import annotations


class Pacer:
    """Playout clock for fixed-duration audio chunks.

    Args:
        chunk_secs: Duration of one chunk of audio.
        max_lead_secs: How far ahead of real-time playout sending may get.
        idle_reset_secs: A gap in playout longer than this counts as silence and restarts the
            clock instead of catching up.
    """

    def __init__(
        self, chunk_secs: float, *, max_lead_secs: float | None = None, idle_reset_secs: float = 0.5
    ) -> None:
        """Create a pacer; see the class docstring for the arguments."""
        if chunk_secs <= 0:
            raise ValueError(f"Pacer: chunk_secs must be > 0, got {chunk_secs}")
        self.chunk_secs = chunk_secs
        self.max_lead_secs = chunk_secs if max_lead_secs is None else max_lead_secs
        self.idle_reset_secs = idle_reset_secs
        # Time at which everything sent so far will have finished playing; None = clock stopped.
        self._deadline: float | None = None
        self.restarts = 0

    def next_delay(self, now: float) -> float:
        """Account for one chunk sent at ``now``; return how long to wait before the next one.

        Args:
            now: Current monotonic time in seconds.

        Returns:
            Seconds to sleep before sending the next chunk (0 while catching up).
        """
        if self._deadline is None or now - self._deadline > self.idle_reset_secs:
            self._deadline = now
            self.restarts += 1
        self._deadline += self.chunk_secs
        return max(0.0, self._deadline - self.max_lead_secs - now)

    def reset(self, now: float) -> None:
        """Stop the clock (after an interruption); the next chunk starts it again.

        Args:
            now: Current monotonic time in seconds (kept for a uniform clock API).
        """
        del now
        self._deadline = None

    def buffered_secs(self, now: float) -> float:
        """Audio sent but, by this clock, not yet played.

        Args:
            now: Current monotonic time in seconds.

        Returns:
            Seconds of audio the peer should still hold (0 when the clock is stopped).
        """
        if self._deadline is None:
            return 0.0
        return max(0.0, self._deadline - now)
