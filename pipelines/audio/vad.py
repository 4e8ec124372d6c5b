"""Local voice activity detection for barge-in: one Silero model per process, state per call.

Pipecat's ``SileroVADAnalyzer`` loads its own ONNX session (~48 ms of blocked loop, ~10 MB)
and starts its own worker thread for every call. The Silero network is stateless apart from a
small recurrent state and context window, so here one ``InferenceSession`` (a ``SileroModel``
the server owns and loads at start) serves every call, and each call keeps only its own state
arrays.

Per 32 ms window Pipecat spends ~140 us in ``Session.run`` plus ~50 us measuring BS.1770
loudness over the last 400 ms, and hops to a worker thread to do it. On a phone line most
windows are silence, so ``SharedSileroVADAnalyzer`` runs inline (no thread hop; a window
blocks the loop for ~0.2 ms at most) behind an energy gate:

* A window is *quiet* when its RMS is ``GATE_MARGIN_DB`` below the level that
  ``VADParams.min_volume`` stands for (volume 0..1 maps -110..-10 LUFS).
* While the VAD is QUIET, the smoothed volume is below ``min_volume`` and the whole 400 ms
  loudness window is quiet, the window cannot count as speech (Pipecat requires
  ``volume >= min_volume``), so the model and the loudness meter are skipped: the volume is
  estimated from the RMS and the window counts as low confidence for Silero's periodic reset.
* Anything else runs exactly Pipecat's path.

The decisions equal Pipecat's on the same audio except that the model's recurrent state does
not see the skipped near-silent windows (``tests/test_vad_shared.py`` compares them).
"""

from __future__ import annotations

import audioop
import math
import threading
from importlib import resources
from typing import Any

from pipecat.audio.utils import exp_smoothing
from pipecat.audio.vad.silero import SileroOnnxModel, SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams, VADState
from pipecat.audio.volume import VOLUME_WINDOW_SECS

# How far below the min_volume level a window must be to skip the model (dB).
GATE_MARGIN_DB = 8.0


class SileroModel:
    """One Silero ONNX session for many analyzers, loaded once on first use (thread-safe).

    The server creates one and loads it off the event loop at start (``load()`` blocks for
    ~48 ms), so the first call does not pay for it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._session: Any = None

    def load(self) -> Any:
        """The ONNX inference session, loaded now if it is not yet."""
        with self._lock:
            if self._session is None:
                path = resources.files("pipecat.audio.vad.data").joinpath("silero_vad.onnx")
                self._session = SileroOnnxModel(str(path), force_onnx_cpu=True).session
            return self._session


class _StreamModel(SileroOnnxModel):
    """Silero's per-stream state around the shared session."""

    def __init__(self, model: SileroModel) -> None:  # no super().__init__: another session
        self.session = model.load()
        self.sample_rates = [8000, 16000]
        self.reset_states()


class SharedSileroVADAnalyzer(SileroVADAnalyzer):
    """``SileroVADAnalyzer`` on the shared model session, run inline behind an energy gate.

    Args:
        sample_rate: 8000 or 16000, or ``None`` to take the pipeline's.
        params: VAD thresholds.
        gate: Skip the model on quiet windows (False: exactly Pipecat's path, inline).
        model: The shared Silero session; None loads one for this analyzer alone.
    """

    def __init__(
        self,
        *,
        sample_rate: int | None = None,
        params: VADParams | None = None,
        gate: bool = True,
        model: SileroModel | None = None,
    ) -> None:
        """Create the analyzer; see the class docstring for the arguments."""
        VADAnalyzer.__init__(self, sample_rate=sample_rate, params=params)
        # VADAnalyzer made a private one-thread executor; windows run inline instead.
        self._executor.shutdown(wait=False)
        self._model = _StreamModel(model or SileroModel())
        self._windows_since_reset = 0
        self._low_confidence_windows = 0
        self._gate = gate
        self._gate_rms = 0.0
        self._quiet_run = 0
        self._quiet_needed = 1
        self.windows = 0
        self.windows_skipped = 0

    def set_params(self, params: VADParams) -> None:
        """Set the thresholds and derive the energy gate from ``min_volume``."""
        super().set_params(params)
        lufs = params.min_volume * 100.0 - 110.0 - GATE_MARGIN_DB
        self._gate_rms = 32768.0 * 10 ** (lufs / 20.0)
        window_secs = self._vad_frames / self.sample_rate
        self._quiet_needed = math.ceil(VOLUME_WINDOW_SECS / window_secs) + 1
        if self.windows == 0:
            # A new stream has no loudness history: it starts quiet, so the first 400 ms of
            # silence skip the model too (they used to cost ~3.5 ms of loop per call setup).
            self._quiet_run = self._quiet_needed

    async def analyze_audio(self, buffer: bytes) -> VADState:
        """Analyze audio inline (no worker-thread hop)."""
        return self._run_analyzer(buffer)

    def _run_analyzer(self, buffer: bytes) -> VADState:
        """Pipecat's ``VADAnalyzer._run_analyzer`` with the energy gate in front of the model."""
        self._vad_buffer += buffer
        need = self._vad_frames_num_bytes
        while len(self._vad_buffer) >= need:
            window = self._vad_buffer[:need]
            self._vad_buffer = self._vad_buffer[need:]
            self.windows += 1
            self._step(self._window_speaking(window))
        if (
            self._vad_state == VADState.STARTING
            and self._vad_starting_count >= self._vad_start_frames
        ):
            self._vad_state = VADState.SPEAKING
            self._vad_starting_count = 0
        if (
            self._vad_state == VADState.STOPPING
            and self._vad_stopping_count >= self._vad_stop_frames
        ):
            self._vad_state = VADState.QUIET
            self._vad_stopping_count = 0
        return self._vad_state

    def _window_speaking(self, window: bytes) -> bool:
        if self._gate:
            rms = audioop.rms(window, 2)
            self._quiet_run = self._quiet_run + 1 if rms < self._gate_rms else 0
            if (
                self._quiet_run >= self._quiet_needed
                and self._vad_state == VADState.QUIET
                and self._prev_volume < self._params.min_volume
            ):
                self._skip_window(window, rms)
                return False
        confidence = self.voice_confidence(window)
        volume = self._get_smoothed_volume(window)
        self._prev_volume = volume
        return confidence >= self._params.confidence and volume >= self._params.min_volume

    def _step(self, speaking: bool) -> None:
        state = self._vad_state
        if speaking:
            if state == VADState.QUIET:
                self._vad_state = VADState.STARTING
                self._vad_starting_count = 1
            elif state == VADState.STARTING:
                self._vad_starting_count += 1
            elif state == VADState.STOPPING:
                self._vad_state = VADState.SPEAKING
                self._vad_stopping_count = 0
        elif state == VADState.STARTING:
            self._vad_state = VADState.QUIET
            self._vad_starting_count = 0
        elif state == VADState.SPEAKING:
            self._vad_state = VADState.STOPPING
            self._vad_stopping_count = 1
        elif state == VADState.STOPPING:
            self._vad_stopping_count += 1

    def _skip_window(self, window: bytes, rms: int) -> None:
        """A window that cannot be speech: keep the volume window and reset logic moving."""
        self.windows_skipped += 1
        self._volume_tracker.update(window, self.sample_rate)
        lufs = 20.0 * math.log10(rms / 32768.0) - 0.691 if rms > 0 else -110.0
        volume = min(1.0, max(0.0, (lufs + 110.0) / 100.0))
        self._prev_volume = exp_smoothing(volume, self._prev_volume, self._smoothing_factor)
        self._maybe_reset_model(0.0)

    async def cleanup(self) -> None:
        """Release per-call state; the shared session stays up for other calls."""
        return None
