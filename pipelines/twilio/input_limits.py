"""Limits on what a caller's media socket may send: JSON depth, audio rate, message rate.

Everything a Twilio Media Stream sends is caller-controlled once the socket is open, so three
things are bounded here, each in the unit that costs us:

* **JSON** (``parse_message``): one parser for the server's ``start`` reader and the
  serializer. Twilio's deepest message (``start``) nests 3 levels; a message nested deeper than
  ``MAX_JSON_DEPTH`` is refused as ``too_deep`` before ``json.loads`` sees it (CPython's parser
  recurses, and 1,000 levels, a 2 KB message, raise ``RecursionError``), and a
  ``RecursionError`` that slips through anyway is ``too_deep`` too. Never a traceback.
* **Audio rate** (``InputLimits.audio``): caller audio is forwarded to the model, which bills
  it, so audio must not arrive faster than real time. A token bucket of audio *seconds*
  (payload bytes / 8000 for mu-law), refilled at one second a second, holds up to
  ``AUDIO_BURST_SECS``: a network stall makes Twilio's 20 ms frames arrive in a bunch, and a
  bunch of that size passes. Audio beyond it is dropped (never sent to the model) and
  counted; more than ``AUDIO_DROP_CLOSE_SECS`` dropped in one call is abuse: the call closes.
* **Message rate** (``InputLimits.message``): every text or binary message costs a parse, so
  all of them (media, mark, dtmf, junk) share a bucket of ``MESSAGE_RATE_HZ`` (twice Twilio's
  50 media messages a second plus marks and digits) with a ``MESSAGE_BURST``; excess is dropped
  and counted, and more than ``MESSAGE_DROP_CLOSE`` dropped is abuse.

Both buckets start when the stream's ``start`` was read, not when the call's receive loop got
going: audio Twilio sent while the call was being set up waited in the socket and arrives in
one bunch, and it is the caller's real-time audio (``InputLimits.credit_backlog``).
"""

from __future__ import annotations

import json
import re
from typing import Any

# Twilio's messages nest at most 3 levels (start -> start -> mediaFormat/customParameters).
MAX_JSON_DEPTH = 16
# A message with no more brackets than this cannot be too deep: no scan needed (every real
# Twilio message; the scan runs only for odd input).
_BRACKETS_WITHOUT_SCAN = MAX_JSON_DEPTH
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")

# Mu-law at 8 kHz: one byte per sample.
MULAW_BYTES_PER_SEC = 8000
# Audio that may arrive ahead of real time: a stall of this long is forgiven in full.
AUDIO_BURST_SECS = 2.0
# Audio dropped (arriving faster than real time) before the call is closed as abuse.
AUDIO_DROP_CLOSE_SECS = 10.0
# All messages: Twilio sends 50 media a second, plus a mark per bot reply and DTMF digits.
MESSAGE_RATE_HZ = 100.0
MESSAGE_BURST = 250.0  # 5 s of Twilio's media after a stall
MESSAGE_DROP_CLOSE = 500
# Set-up time forgiven at most (the backlog of a call whose set-up waited its turn).
MAX_BACKLOG_SECS = 30.0


def json_depth(text: str) -> int:
    """How deep ``text``'s brackets nest, outside JSON strings (no parse, no recursion)."""
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub("", text)):
        if match.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def parse_message(text: str) -> tuple[Any, str | None]:
    """Parse one JSON message: ``(value, None)``, or ``(None, kind)`` with why it is bad.

    ``kind`` is ``too_deep`` (nested beyond ``MAX_JSON_DEPTH``) or ``invalid_json``; never
    raises.
    """
    if (text.count("{") + text.count("[") > _BRACKETS_WITHOUT_SCAN) and (
        json_depth(text) > MAX_JSON_DEPTH
    ):
        return None, "too_deep"
    try:
        return json.loads(text), None
    except RecursionError:
        return None, "too_deep"
    except ValueError:
        return None, "invalid_json"


class RateBucket:
    """A token bucket: ``rate`` units a second refill it up to ``burst``.

    Args:
        rate: Units added per second.
        burst: The most it holds (and what it starts with).
        now: The monotonic time it starts at.
    """

    __slots__ = ("burst", "dropped", "level", "rate", "_at")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        """Create a full bucket; see the class docstring for the arguments."""
        self.rate = rate
        self.burst = burst
        self.level = burst
        self.dropped = 0.0
        self._at = now

    def credit(self, amount: float) -> None:
        """Add ``amount`` once, even beyond ``burst`` (refills never take it away)."""
        self.level += amount

    def take(self, amount: float, now: float) -> bool:
        """Take ``amount`` if the bucket holds it (True); otherwise count it as dropped."""
        if self.level < self.burst:
            self.level = min(self.burst, self.level + (now - self._at) * self.rate)
        self._at = now
        if amount > self.level:
            self.dropped += amount
            return False
        self.level -= amount
        return True


class InputLimits:
    """One call's audio and message rate limits (see the module docstring).

    Args:
        now: When the stream's ``start`` was read (monotonic).
    """

    def __init__(self, now: float) -> None:
        """Create full buckets; see the class docstring for the arguments."""
        self._started_at = now
        self.audio_bucket = RateBucket(1.0, AUDIO_BURST_SECS, now)
        self.message_bucket = RateBucket(MESSAGE_RATE_HZ, MESSAGE_BURST, now)

    def credit_backlog(self, now: float) -> None:
        """The receive loop starts now: what Twilio sent meanwhile waited in the socket."""
        waited = min(max(0.0, now - self._started_at), MAX_BACKLOG_SECS)
        self.audio_bucket.credit(waited)
        self.message_bucket.credit(waited * MESSAGE_RATE_HZ)

    def message(self, now: float) -> bool:
        """One message arrived: whether it may be handled (False: drop it)."""
        return self.message_bucket.take(1.0, now)

    def audio(self, secs: float, now: float) -> bool:
        """``secs`` of caller audio arrived: whether it may go on (False: drop it)."""
        return self.audio_bucket.take(secs, now)

    def abuse(self) -> str | None:
        """Why the call must be closed (1008), or None while the drops stay within bounds."""
        dropped_secs = self.audio_bucket.dropped
        if dropped_secs > AUDIO_DROP_CLOSE_SECS:
            return (
                f"audio faster than real time: {dropped_secs:.1f} s dropped "
                f"(more than {AUDIO_DROP_CLOSE_SECS:g} s allowed)"
            )
        dropped = int(self.message_bucket.dropped)
        if dropped > MESSAGE_DROP_CLOSE:
            return (
                f"too many messages: {dropped} dropped over {MESSAGE_RATE_HZ:g} a second "
                f"(more than {MESSAGE_DROP_CLOSE} allowed)"
            )
        return None
