"""The one private access of Pipecat: silencing a turn-stop strategy's STT latency advice.

Pipecat's ``SpeechTimeoutUserTurnStopStrategy`` logs a warning, once per strategy (once per
call), when the VAD's ``stop_secs`` differs from its default: its turn timing assumes a
speech-to-text service's latency table. A speech-to-speech call has no STT, so the warning is
wrong and costs a log line per call. The strategy has no public switch; its flag
``_stop_secs_warned`` says the warning was given. Only this module sets it.

Retire when: Pipecat adds a constructor flag (or a speech-to-speech mode) that skips the advice.
``attribute_problems()`` in ``pipelines._compat.check()`` verifies the flag still exists.
May import Pipecat only.
"""

from __future__ import annotations

from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy


def without_stop_secs_advice(
    strategy: SpeechTimeoutUserTurnStopStrategy,
) -> SpeechTimeoutUserTurnStopStrategy:
    """``strategy``, marked as having given its ``stop_secs`` advice (so it never logs it)."""
    strategy._stop_secs_warned = True
    return strategy
