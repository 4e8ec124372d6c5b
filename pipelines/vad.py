"""Local voice activity detection for barge-in: one Silero model per process, state per call.

Pipecat's ``SileroVADAnalyzer`` loads its own ONNX session (~48 ms of blocked loop, ~10 MB)
and starts its own worker thread for every call. The Silero network is stateless apart from a
small recurrent state and context window, so here one ``InferenceSession`` and one worker
thread serve every call, and each call keeps only its own state arrays.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from importlib import resources

from pipecat.audio.vad.silero import SileroOnnxModel, SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams

_lock = threading.Lock()
_session = None
_executor: ThreadPoolExecutor | None = None


def _shared_session():
    """The process's Silero ONNX session, loaded on first use."""
    global _session
    with _lock:
        if _session is None:
            path = resources.files("pipecat.audio.vad.data").joinpath("silero_vad.onnx")
            _session = SileroOnnxModel(str(path), force_onnx_cpu=True).session
        return _session


def _shared_executor() -> ThreadPoolExecutor:
    """One worker thread runs every call's VAD windows, in order per call."""
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vad")
        return _executor


def preload() -> None:
    """Load the model now (at server start) so the first call does not pay for it."""
    _shared_session()
    _shared_executor()


class _StreamModel(SileroOnnxModel):
    """Silero's per-stream state around the shared session."""

    def __init__(self) -> None:  # no super().__init__: it would load another session
        self.session = _shared_session()
        self.sample_rates = [8000, 16000]
        self.reset_states()


class SharedSileroVADAnalyzer(SileroVADAnalyzer):
    """``SileroVADAnalyzer`` whose model session and worker thread are shared by all calls.

    Gives the same decisions as a per-call ``SileroVADAnalyzer`` on the same audio: the
    network weights are the same and every piece of per-stream state is per instance.

    Args:
        sample_rate: 8000 or 16000, or ``None`` to take the pipeline's.
        params: VAD thresholds.
    """

    def __init__(self, *, sample_rate: int | None = None, params: VADParams | None = None):
        VADAnalyzer.__init__(self, sample_rate=sample_rate, params=params)
        # VADAnalyzer made a private one-thread executor; use the shared one instead.
        self._executor.shutdown(wait=False)
        self._executor = _shared_executor()
        self._model = _StreamModel()
        self._windows_since_reset = 0
        self._low_confidence_windows = 0

    async def cleanup(self) -> None:
        """Release per-call state; the shared executor stays up for other calls."""
        return None
