"""Per-call speech turns from Silero scores: Pipecat's VAD state machine, with a cheap loudness.

``SpeechTurns`` decides, one 32 ms window at a time, when the caller starts and stops speaking.
It is the same machine as Pipecat's ``VADAnalyzer`` with ``SileroVADAnalyzer``'s model resets,
written on public names only (``VADParams``, ``VADState``) so no private attribute of Pipecat
holds it together:

* A window is *speech* when Silero's confidence >= ``params.confidence`` and the smoothed
  volume >= ``params.min_volume``. QUIET -> STARTING -> SPEAKING after ``round(start_secs /
  window)`` speech windows in a row; SPEAKING -> STOPPING -> QUIET after ``round(stop_secs /
  window)`` non-speech windows in a row (a speech window in STOPPING returns to SPEAKING).
  Pipecat checks the two thresholds once per ``analyze_audio`` call; here once per window, so a
  decision is never later than Pipecat's and at most one chunk sooner.
* Model resets as Silero's analyzer does them: once 2 s of audio were scored since the last
  reset, the first window with the VAD QUIET (its state before that window) and the last 5
  windows all below confidence 0.1 resets the model's recurrent state (``window()`` returns
  True and the detector clears that call's state row).

**Loudness.** Pipecat measures BS.1770 integrated loudness (K-weighting filter, gating) over
the last 400 ms on every window: ~50 us a window, more than the batched model costs. Here the
volume comes from plain energy over the same 400 ms (kept as a ring of 25 half-window sums of
squares, which the detector computes for a whole batch in one numpy operation), ~2 us a window:

    loudness = 10 * log10(mean square of the 400 ms, samples in -1..1) - 0.691 + K_GAIN_DB
    volume   = (loudness + 110) / 100, clipped to 0..1   (Pipecat's -110..-10 LUFS scale)

0 below BS.1770's absolute gate (-70 LUFS) and until 400 ms of audio were seen, as Pipecat's;
then smoothed exactly as Pipecat's (``v = prev + 0.2 * (v - prev)``). Against Pipecat's BS.1770
on the same audio upsampled to 16 kHz (what the server measured before), plain energy reads
0.7-0.9 dB low on the bundled speech and 1.2-1.3 dB low on pink line noise at -60..-44 dBFS
(K-weighting and relative gating); ``K_GAIN_DB`` adds the middle of that, leaving speech within
+-0.7 dB and noise within -0.3 dB: 0.007 and 0.003 on the 0..1 scale
(``tests/test_vad_batched.py`` checks the volume and the decisions against Pipecat's).
"""

from __future__ import annotations

import math
from collections import deque

from pipecat.audio.vad.vad_analyzer import VADParams, VADState
from pipecat.audio.volume import VOLUME_WINDOW_SECS

SAMPLE_RATE_HZ = 8000
WINDOW_SAMPLES = 256  # Silero's window at 8 kHz (32 ms)
HALF_SAMPLES = WINDOW_SAMPLES // 2
# Silero's analyzer resets the model after this much audio, once the caller is clearly quiet:
# 5 windows in a row under confidence 0.1 with the VAD QUIET (pipecat.audio.vad.silero).
MODEL_RESET_INTERVAL_SECS = 2.0
MODEL_RESET_MAX_CONFIDENCE = 0.1
MODEL_RESET_LOW_CONFIDENCE_WINDOWS = 5
# Pipecat's volume: -110..-10 LUFS onto 0..1, smoothed with this factor; BS.1770's absolute gate.
LUFS_FLOOR = -110.0
LUFS_SPAN = 100.0
ABSOLUTE_GATE_LUFS = -70.0
VOLUME_SMOOTHING = 0.2
# Plain energy against BS.1770 on telephone audio at 8 kHz: see the module docstring.
K_GAIN_DB = 1.1


def volume_of(mean_square: float) -> float:
    """Pipecat's 0..1 volume for the mean square (samples in -1..1) of 400 ms of audio."""
    if mean_square <= 0.0:
        return 0.0
    lufs = 10.0 * math.log10(mean_square) - 0.691 + K_GAIN_DB
    if lufs < ABSOLUTE_GATE_LUFS:
        return 0.0
    return min(1.0, max(0.0, (lufs - LUFS_FLOOR) / LUFS_SPAN))


class SpeechTurns:
    """One call's VAD state machine (see the module docstring).

    Args:
        params: The thresholds (Pipecat's ``VADParams``).

    Attributes:
        state: The machine's state after the last window.
        volume: The smoothed volume after the last window (0..1).
        confidence: Silero's score of the last window.
    """

    def __init__(self, params: VADParams) -> None:
        """Start QUIET with no loudness history."""
        self.params = params
        window_secs = WINDOW_SAMPLES / SAMPLE_RATE_HZ
        self._start_windows = round(params.start_secs / window_secs)
        self._stop_windows = round(params.stop_secs / window_secs)
        self._reset_windows = math.ceil(MODEL_RESET_INTERVAL_SECS / window_secs)
        halves = math.ceil(VOLUME_WINDOW_SECS * SAMPLE_RATE_HZ / HALF_SAMPLES)
        self._energy: deque[float] = deque(maxlen=halves)
        self._volume_samples = halves * HALF_SAMPLES
        self.state = VADState.QUIET
        self.volume = 0.0
        self.confidence = 0.0
        self._starting = 0
        self._stopping = 0
        self._since_reset = 0
        self._low_run = 0

    def window(self, confidence: float, energy_first: float, energy_second: float) -> bool:
        """Take one scored window; True when the model's state must be reset now.

        Args:
            confidence: Silero's speech probability for the window.
            energy_first: Sum of squares (samples in -1..1) of the window's first half.
            energy_second: The same for its second half.
        """
        self.confidence = confidence
        reset = self._reset_due(confidence)
        self._energy.append(energy_first)
        self._energy.append(energy_second)
        if len(self._energy) == self._energy.maxlen:
            loud = volume_of(sum(self._energy) / self._volume_samples)
        else:
            loud = 0.0
        self.volume += VOLUME_SMOOTHING * (loud - self.volume)
        p = self.params
        self._step(confidence >= p.confidence and self.volume >= p.min_volume)
        return reset

    def _reset_due(self, confidence: float) -> bool:
        """Silero's periodic reset, judged on the state before this window."""
        self._since_reset += 1
        self._low_run = self._low_run + 1 if confidence < MODEL_RESET_MAX_CONFIDENCE else 0
        if (
            self._since_reset >= self._reset_windows
            and self.state == VADState.QUIET
            and self._low_run >= MODEL_RESET_LOW_CONFIDENCE_WINDOWS
        ):
            self._since_reset = 0
            return True
        return False

    def _step(self, speech: bool) -> None:
        state = self.state
        if speech:
            if state == VADState.QUIET:
                state, self._starting = VADState.STARTING, 1
            elif state == VADState.STARTING:
                self._starting += 1
            elif state == VADState.STOPPING:
                state, self._stopping = VADState.SPEAKING, 0
        elif state == VADState.STARTING:
            state, self._starting = VADState.QUIET, 0
        elif state == VADState.SPEAKING:
            state, self._stopping = VADState.STOPPING, 1
        elif state == VADState.STOPPING:
            self._stopping += 1
        if state == VADState.STARTING and self._starting >= self._start_windows:
            state, self._starting = VADState.SPEAKING, 0
        elif state == VADState.STOPPING and self._stopping >= self._stop_windows:
            state, self._stopping = VADState.QUIET, 0
        self.state = state
