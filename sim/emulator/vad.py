"""Energy-based voice activity detection on the caller's audio, in 10 ms frames.

Honours ``automatic_activity_detection``: start sensitivity sets the speech threshold,
``prefix_padding_ms`` how long speech must last before the start is committed, end
sensitivity the threshold below which a frame counts as silence, ``silence_duration_ms`` how
much silence ends the turn. Per chunk the work is a few numpy calls and a loop over its
2-4 frames.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from sim.emulator.schema import VadParams

FRAME_MS = 10
PREROLL_MS = 200
MAX_UTTERANCE_SECS = 60.0
_START_DBFS = {"START_SENSITIVITY_HIGH": -45.0, "START_SENSITIVITY_LOW": -35.0}
_END_DBFS = {"END_SENSITIVITY_HIGH": -40.0, "END_SENSITIVITY_LOW": -50.0}
_EMPTY = np.zeros(0, dtype=np.int16)


@dataclass
class VadEvents:
    """What one chunk of audio changed."""

    started: bool = False
    ended: bool = False


class TurnDetector:
    """Finds caller turns in a stream of PCM16 mono audio at one sample rate.

    Args:
        params: The setup's VAD parameters.
        rate_hz: Sample rate of the audio that will be fed.
    """

    def __init__(self, params: VadParams, rate_hz: int) -> None:
        self.rate_hz = rate_hz
        self._frame = max(1, rate_hz * FRAME_MS // 1000)
        # Thresholds as frame energy (sum of squares), so no logarithm per frame.
        full_scale = self._frame * 32768.0**2
        start_db = _START_DBFS.get(params.start_sensitivity, -45.0)
        end_db = _END_DBFS.get(params.end_sensitivity, -40.0)
        self._start_energy = full_scale * 10 ** (start_db / 10)
        self._end_energy = full_scale * 10 ** (end_db / 10)
        self._start_frames = max(1, params.prefix_padding_ms // FRAME_MS)
        self._end_frames = max(1, params.silence_duration_ms // FRAME_MS)
        self._max_frames = int(MAX_UTTERANCE_SECS * 1000 / FRAME_MS)
        self._carry = np.zeros(0, dtype=np.int16)
        self._preroll: deque[np.ndarray] = deque(maxlen=PREROLL_MS // FRAME_MS + self._start_frames)
        self._utterance: list[np.ndarray] = []
        self._last_voiced = 0
        self._run = 0
        self._silence = 0
        self.in_speech = False
        self.finished: np.ndarray | None = None

    def feed(self, pcm: bytes) -> VadEvents:
        """Feed a chunk; on ``ended`` the utterance is in ``finished``."""
        events = VadEvents()
        samples = np.frombuffer(pcm[: len(pcm) & ~1], dtype=np.int16)
        if self._carry.size:
            samples = np.concatenate((self._carry, samples))
        count = samples.size // self._frame
        if count * self._frame != samples.size:
            self._carry = samples[count * self._frame :].copy()
        elif self._carry.size:
            self._carry = _EMPTY
        if count == 0:
            return events
        frames = samples[: count * self._frame].reshape(count, self._frame)
        as_float = frames.astype(np.float32)
        energy = np.einsum("ij,ij->i", as_float, as_float)
        if not self.in_speech:
            loud = energy > self._start_energy
            if not loud.any():  # the common case between turns: no per-frame work
                self._preroll.extend(frames)
                self._run = 0
                return events
            flags = loud.tolist()
        else:
            flags = (energy > self._end_energy).tolist()
            if all(flags):
                self._utterance.extend(frames)
                self._silence = 0
                self._last_voiced = len(self._utterance)
                return events
        for i, flag in enumerate(flags):
            frame = frames[i]
            if not self.in_speech:
                self._preroll.append(frame)
                self._run = self._run + 1 if flag else 0
                if self._run >= self._start_frames:
                    self.in_speech = events.started = True
                    self._utterance = list(self._preroll)
                    self._last_voiced = len(self._utterance)
                    self._silence = 0
                    # the rest of this chunk is judged against the end threshold
                    rest = (energy[i + 1 :] > self._end_energy).tolist()
                    flags[i + 1 :] = rest
                continue
            self._utterance.append(frame)
            if flag:
                self._silence = 0
                self._last_voiced = len(self._utterance)
            else:
                self._silence += 1
            if self._silence >= self._end_frames or len(self._utterance) >= self._max_frames:
                self._finish()
                events.ended = True
        return events

    def flush(self) -> bool:
        """End a turn in progress now (``audioStreamEnd``); whether one was in progress."""
        if not self.in_speech:
            return False
        self._finish()
        return True

    def _finish(self) -> None:
        self.finished = np.concatenate(self._utterance[: self._last_voiced])
        self._utterance = []
        self._preroll.clear()
        self._run = 0
        self.in_speech = False
