"""What the call library needs from the server that runs it, declared as small interfaces.

``pipelines`` never imports the server (``bot``) or the lab (``sim``); the server implements
these and hands them in through ``pipelines.call.pipeline.ProcessResources``:

* ``BridgeMetrics``: where the audio path reports bridge latency and audio seconds
  (``bot.stats.ProcessStats``). ``NO_METRICS`` drops everything (tests, tools).
* ``CallRest``: the call-control requests of the Twilio REST API, hang-up and redirect
  (``bot.twilio_rest.TwilioRest``). The call's only REST path: the serializer's hang-up at a
  normal call end goes through it too.
* ``CallReadyHook``: called once per call when its Live API session is ready or its setup
  failed (``bot.gc_policy.GcPolicy.call_ready`` freezes the new call there).
* ``SessionFailedHook``: called when a call's Live API session is refused or lost, with the
  close code and reason (``bot.calls.CallRegistry.session_failed`` learns the quota there).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

CallReadyHook = Callable[[], None]
# (call SID, close code or None, reason): a call's Live API session was refused or lost.
SessionFailedHook = Callable[[str, int | None, str], None]


class LatencyRecorder(Protocol):
    """A latency histogram (``bot.stats.Histogram``)."""

    def add_secs(self, secs: float) -> None:
        """Record one sample, in seconds."""


class BridgeMetrics(Protocol):
    """The counters the audio path feeds (``bot.stats.ProcessStats``)."""

    @property
    def bridge_in(self) -> LatencyRecorder:
        """A Twilio ``media`` message read -> its audio handed to the Gemini send path."""

    @property
    def bridge_out(self) -> LatencyRecorder:
        """A model audio message received (or released by pacing) -> written to Twilio."""

    def add_model_audio_secs(self, secs: float) -> None:
        """Seconds of audio received from the model."""

    def add_twilio_audio_secs(self, secs: float) -> None:
        """Seconds of audio written to Twilio."""


class CallRest(Protocol):
    """Twilio REST requests on a live call; both answer False (logged) when Twilio refused."""

    async def hang_up(self, call_sid: str) -> bool:
        """End the call."""

    async def redirect(self, call_sid: str, twiml: str) -> bool:
        """Replace the call's TwiML (a transfer)."""


class _NoLatency:
    __slots__ = ()

    def add_secs(self, secs: float) -> None:
        return None


class NoMetrics:
    """``BridgeMetrics`` that records nothing."""

    __slots__ = ()
    bridge_in: LatencyRecorder = _NoLatency()
    bridge_out: LatencyRecorder = _NoLatency()

    def add_model_audio_secs(self, secs: float) -> None:
        """Drop the sample."""

    def add_twilio_audio_secs(self, secs: float) -> None:
        """Drop the sample."""


NO_METRICS: BridgeMetrics = NoMetrics()
