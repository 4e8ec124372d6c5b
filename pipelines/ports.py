"""What the call library needs from the server that runs it, declared as small interfaces.

``pipelines`` never imports the server (``bot``) or the lab (``sim``); the server implements
these and hands them in through ``pipelines.call.pipeline.ProcessResources``:

* ``BridgeMetrics``: where the audio path reports bridge latency and audio seconds
  (``bot.stats.ProcessStats``). ``NO_METRICS`` drops everything (tests, tools).
* ``CallMetrics``: one call's events (session ready, caller turn end, bot audio sent, barge-in
  and ``clear``, handovers, reconnects, Live API closes, tokens), on top of ``BridgeMetrics``;
  the server makes one per call (``ProcessResources.call_metrics``, ``bot.metrics``) and turns
  them into Prometheus metrics. ``NoCallMetrics`` keeps only the bridge part.
* ``CallRest``: the call-control requests of the Twilio REST API, hang-up and redirect
  (``bot.twilio_rest.TwilioRest``). The call's only REST path: the serializer's hang-up at a
  normal call end goes through it too.
* ``CallReadyHook``: called once per call when its Live API session is ready or its setup
  failed (``bot.gc_policy.GcPolicy.call_ready`` freezes the new call there).
* ``SessionFailedHook``: called when a call's Live API session is refused or lost, with the
  close code and reason (``bot.calls.CallRegistry.session_failed`` learns the quota there).
* ``TranscriptListener``: where a call's transcripts and token usage go as they arrive
  (``pipelines.call.journal.CallJournal``, which the server stores at the call's end,
  ``bot.records``); ``TurnEndedHook``: the server's live view of each turn as it closes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

CallReadyHook = Callable[[], None]


@dataclass(frozen=True)
class TranscriptTurn:
    """One turn of a call's transcript.

    Attributes:
        speaker: ``caller`` or ``bot``.
        text: The words (the Live API's transcription); empty when the persona keeps none.
        at_secs: When the turn began, in seconds from the call's start.
        interrupted: A bot turn cut by a barge-in.
        heard_text: A bot turn: the part of its words whose audio was sent to the phone
            (None for the caller).
        heard_secs: A bot turn: seconds of its audio played (None for the caller).
    """

    speaker: str
    text: str
    at_secs: float
    interrupted: bool = False
    heard_text: str | None = None
    heard_secs: float | None = None


class TranscriptListener(Protocol):
    """A call's transcripts and token usage as they arrive (``CallJournal``)."""

    def caller_said(self, text: str) -> None:
        """A sentence of the caller's words."""

    def bot_said(self, text: str) -> None:
        """A fragment of the bot's words as the model produced them."""

    def model_usage(self, tokens: Mapping[str, int]) -> None:
        """Token counts of one ``usageMetadata`` by kind (``prompt``, ``response``, ...)."""


# (call SID, turn): a turn of a call's transcript has closed (a live view of the call).
TurnEndedHook = Callable[[str, TranscriptTurn], None]
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

    def add_caller_audio_secs(self, secs: float) -> None:
        """Seconds of caller audio received from Twilio (counted per batch)."""


class CallMetrics(BridgeMetrics, Protocol):
    """One call's events, reported where they happen (cheap: no allocation per audio chunk).

    Labels are the implementation's business: ``cause``/``source``/``kind``/``modality`` come
    from the small fixed sets named below, never from caller data.
    """

    def session_ready(self) -> None:
        """A Live API session is ready (``setupComplete``); the first one ends call setup."""

    def caller_turn_ended(self, lag_secs: float) -> None:
        """The local VAD ended the caller's turn; the caller went quiet ``lag_secs`` ago."""

    def caller_started(self) -> None:
        """The caller started speaking (a response not yet begun is no longer owed)."""

    def bot_audio_sent(self) -> None:
        """A chunk of bot audio was written to Twilio (the hot path: 25 times a second)."""

    def barge_in(self, source: str) -> None:
        """An interruption was detected: ``source`` is ``local_vad`` or ``model``."""

    def clear_done(self, sent: bool) -> None:
        """The output handled the interruption: ``clear`` sent (audio was playing) or not."""

    def handover(self, cause: str) -> None:
        """The call moved to a new Live API connection: ``go_away`` or ``watchdog``."""

    def reconnect(self, cause: str) -> None:
        """An unplanned connection end to reconnect from: ``dropped`` or ``refused``."""

    def gemini_closed(self, code: int | None) -> None:
        """The Live API ended a connection (or refused one) with this close code."""

    def add_tokens(self, kind: str, modality: str, count: int) -> None:
        """Tokens of one ``usageMetadata``: ``kind`` prompt/response/thoughts/tool_prompt."""

    def tool_call(self, tool: str, outcome: str, latency_secs: float) -> None:
        """A persona HTTP tool call ended (``pipelines.tools``): its name, outcome and time."""


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

    def add_caller_audio_secs(self, secs: float) -> None:
        """Drop the sample."""


NO_METRICS: BridgeMetrics = NoMetrics()


class NoCallMetrics:
    """``CallMetrics`` that passes the bridge part to ``bridge`` and drops the call events."""

    __slots__ = ("_bridge",)

    def __init__(self, bridge: BridgeMetrics = NO_METRICS) -> None:
        """Wrap ``bridge`` (default: record nothing)."""
        self._bridge = bridge

    @property
    def bridge_in(self) -> LatencyRecorder:
        """The wrapped bridge-in histogram."""
        return self._bridge.bridge_in

    @property
    def bridge_out(self) -> LatencyRecorder:
        """The wrapped bridge-out histogram."""
        return self._bridge.bridge_out

    def add_model_audio_secs(self, secs: float) -> None:
        """Pass on."""
        self._bridge.add_model_audio_secs(secs)

    def add_twilio_audio_secs(self, secs: float) -> None:
        """Pass on."""
        self._bridge.add_twilio_audio_secs(secs)

    def add_caller_audio_secs(self, secs: float) -> None:
        """Pass on."""
        self._bridge.add_caller_audio_secs(secs)

    def session_ready(self) -> None:
        """Drop."""

    def caller_turn_ended(self, lag_secs: float) -> None:
        """Drop."""

    def caller_started(self) -> None:
        """Drop."""

    def bot_audio_sent(self) -> None:
        """Drop."""

    def barge_in(self, source: str) -> None:
        """Drop."""

    def clear_done(self, sent: bool) -> None:
        """Drop."""

    def handover(self, cause: str) -> None:
        """Drop."""

    def reconnect(self, cause: str) -> None:
        """Drop."""

    def gemini_closed(self, code: int | None) -> None:
        """Drop."""

    def add_tokens(self, kind: str, modality: str, count: int) -> None:
        """Drop."""

    def tool_call(self, tool: str, outcome: str, latency_secs: float) -> None:
        """Drop."""


NO_CALL_METRICS: CallMetrics = NoCallMetrics()
# Makes a call's metrics from its persona id and model (``ProcessResources.call_metrics``).
CallMetricsFactory = Callable[[str, str], CallMetrics]
