"""What one simulated caller experienced: :class:`CallResult` and its timeline.

Metric definitions (all times in ms; "audible" = µ-law frame decoded to PCM16 with RMS above the
plan's ``silence_rms``):

- ``setup_ms``: webhook POST start -> ``start`` message sent.
- ``setup_to_audio_ms``: webhook POST start -> first audible bot audio heard.
- ``greeting_ms``: ``start`` sent -> first audible bot audio heard.
- ``response_latencies_ms``: per caller utterance, its last frame sent -> first audible bot audio
  heard after it. Not measured when the bot was still audibly playing when the caller stopped
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
  came in between.
- ``interarrival_p99_ms`` / ``interarrival_max_ms`` (the "bot-frame gap"): time between consecutive
  bot media messages of the same reply, by the rule above (never across a ``clear``, a caller
  utterance or a reply's end). It measures how evenly the server sends, not what the caller
  hears: a server that sends ahead of playout and then waits for the model's next burst shows
  a long gap here while the phone still has audio queued (a reply's start on the bench's
  speaking scenario: ~280 and ~120 ms, no underrun). ``gaps_ms`` says whether a hole was heard.
- ``dead_air_secs``: the longest silence the caller sat through that it did not cause (0.0 when
  none): from the moment it waited for the bot (the stream started and no greeting yet; its
  utterance ended; bot audio stopped and more bot audio followed before the caller spoke again)
  to the next bot audio heard, or to when the caller spoke again (an owed greeting or reply), or
  to the call's end if it was still waiting. Silence after the bot finished while the caller
  chose to stay quiet (a ``pause`` step) is the caller's. ``dead_air``: every such wait of at
  least 0.3 s (start ``t`` on the timeline, ``secs``, ``kind``, what ended it); see
  :mod:`sim.caller.dead_air`. Unlike ``gaps_ms`` it does not split a long silence into a "new
  reply": a 5 s stall mid-answer is 5 s of dead air.
- ``send_lateness_max_ms``: this call's latest frame send against its 20 ms deadline (the
  generator's own delay). ``frames_backpressured``: frames that could not be written at once
  because the server had stopped reading this call's stream (its socket buffer was full): they
  went out late by the server's doing, not the generator's.
- ``audio_received_secs`` / ``audio_played_secs`` / ``audio_cleared_secs``: bot audio delivered,
  actually played by the phone, and discarded by ``clear``.
- ``protocol_errors``: messages from the server that Twilio would have dropped, by kind
  (``binary`` is Twilio error 31950, the rest 31951; see :mod:`sim.caller.twilio_checks`). They
  are not acted on; the timeline notes the first of each kind.
- ``line``: the line the call was placed on (noise level and colour, echo, playout delay).

"Heard" means played by the phone: audio arriving at an empty playback buffer plays
``playout_delay_ms`` later (Twilio's own buffering), audio arriving while earlier audio still
plays is queued behind it. ``gaps_ms`` counts how long the buffer had run dry when audio
arrived (the re-buffering delay after an underrun is not added to it).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from sim.caller.dead_air import DeadAir


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
    twiml_say_voice: str | None = None  # the <Say>'s voice and language attributes
    twiml_say_language: str | None = None
    redirects: int = 0  # TwiML <Redirect>s followed before the final TwiML (a full process's)
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
    dead_air_secs: float = 0.0
    dead_air: list[DeadAir] = field(default_factory=list)
    interarrival_p99_ms: float | None = None
    interarrival_max_ms: float | None = None
    audio_sent_secs: float = 0.0
    audio_received_secs: float = 0.0
    audio_played_secs: float = 0.0
    audio_cleared_secs: float = 0.0
    duration_secs: float = 0.0
    send_lateness_max_ms: float = 0.0
    frames_backpressured: int = 0
    protocol_errors: dict[str, int] = field(default_factory=dict)
    line: dict[str, Any] = field(default_factory=dict)
    events: list[CallEvent] = field(default_factory=list)

    @property
    def gaps(self) -> list[float]:
        """Alias of ``gaps_ms``."""
        return self.gaps_ms

    @property
    def protocol_error_count(self) -> int:
        """Messages from the server that Twilio would have dropped, all kinds."""
        return sum(self.protocol_errors.values())

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
        d["dead_air"] = [DeadAir(**w) for w in d.get("dead_air", [])]
        return cls(**d)
