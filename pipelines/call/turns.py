"""The call's local turn detection: VAD parameters from the persona, the context aggregators.

Caller turns come from the local VAD (``caller_audio``), whose speech start/stop enter the
pipeline as Pipecat's VAD frames; the user aggregator's turn strategies make turns of them
(a turn starts on speech: barge-in; it ends on the VAD's silence). ``CallPipeline``
(``pipeline``) builds its aggregator pair and the route's VAD parameters here.
"""

from __future__ import annotations

from typing import Any

from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.turns.user_start import VADUserTurnStartStrategy
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies

from pipelines._compat.turn_stop import without_stop_secs_advice

# After the VAD's stop (``stop_secs`` of quiet), how long the turn stays open for the caller to
# go on (Pipecat's default, named because the watchdog counts the silence from the last word:
# a local turn ends stop_secs + this after it).
USER_SPEECH_TIMEOUT_SECS = 0.6


def turn_end_lag_secs(persona: Any) -> float:
    """How long after the caller's last word the local turn ends (0 without local VAD)."""
    b = persona.barge_in
    return b.stop_secs + USER_SPEECH_TIMEOUT_SECS if b.local_vad else 0.0


def _turn_stop_strategy() -> SpeechTimeoutUserTurnStopStrategy:
    """Ends local user turns on VAD silence.

    Gemini hears the audio itself, so no transcript is awaited, and the strategy's per-call
    advice about ``stop_secs`` (an STT latency table) does not apply.
    """
    strategy = SpeechTimeoutUserTurnStopStrategy(
        user_speech_timeout=USER_SPEECH_TIMEOUT_SECS, wait_for_transcript=False
    )
    return without_stop_secs_advice(strategy)


def context_aggregators(context: LLMContext) -> LLMContextAggregatorPair:
    """The user and assistant aggregators of a realtime call on ``context``.

    User turns start on VAD speech and stop on VAD silence (no transcript awaited).
    """
    return LLMContextAggregatorPair(
        context,
        realtime_service_mode=True,
        user_params=LLMUserAggregatorParams(
            user_turn_strategies=UserTurnStrategies(
                start=[VADUserTurnStartStrategy()], stop=[_turn_stop_strategy()]
            ),
        ),
    )


def vad_params(persona: Any) -> VADParams | None:
    """The local VAD's parameters from the persona's ``barge_in``; None without local VAD."""
    b = persona.barge_in
    if not b.local_vad:
        return None
    start_secs = max(b.start_secs, b.min_speech_ms / 1000)
    return VADParams(
        confidence=b.confidence,
        start_secs=start_secs,
        stop_secs=b.stop_secs,
        min_volume=b.min_volume,
    )
