"""Energy-based voice activity detection on the caller's audio, in 10 ms frames.

Honours ``automatic_activity_detection``: start sensitivity sets the speech threshold,
``prefix_padding_ms`` how long speech must last before the start is committed, end
sensitivity the threshold below which a frame counts as silence, ``silence_duration_ms`` how
much silence ends the turn.

A phone line is never silent: line noise sits around -45 dBFS (up to -40). The thresholds are
absolute levels above that (speech frames on the bundled caller recordings are -25 dBFS at the
median) and, on a louder line, relative to an adaptive noise floor: between turns the floor
follows the quietest frame of each chunk (down at once, up with a one-second time constant),
speech must exceed it by ``START_MARGIN_DB`` for ``prefix_padding_ms``, and a turn ends when
frames stay within ``END_MARGIN_DB`` of it for ``silence_duration_ms``. Per chunk the work is a
few numpy calls and, only near a threshold, a loop over its 2-4 frames.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from sim.emulator.schema import VadParams

FRAME_MS = 10
PREROLL_MS = 200
MAX_UTTERANCE_SECS = 60.0
# Frame RMS levels, above line noise (-45..-40 dBFS) and below the body of speech (-25 dBFS).
_START_DBFS = {"START_SENSITIVITY_HIGH": -33.0, "START_SENSITIVITY_LOW": -27.0}
_END_DBFS = {"END_SENSITIVITY_HIGH": -33.0, "END_SENSITIVITY_LOW": -37.0}
START_MARGIN_DB = 10.0
END_MARGIN_DB = 6.0
# Per 10 ms frame: the floor follows the chunks' mean energy, up with a ~1 s time constant,
# down with ~0.2 s.
FLOOR_RISE_PER_FRAME = 0.01
FLOOR_FALL_PER_FRAME = 0.05
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
        start_db = _START_DBFS.get(params.start_sensitivity, _START_DBFS["START_SENSITIVITY_HIGH"])
        end_db = _END_DBFS.get(params.end_sensitivity, _END_DBFS["END_SENSITIVITY_HIGH"])
        self._abs_start = full_scale * 10 ** (start_db / 10)
        self._abs_end = full_scale * 10 ** (end_db / 10)
        self._start_margin = 10 ** (START_MARGIN_DB / 10)
        self._end_margin = 10 ** (END_MARGIN_DB / 10)
        self._start_energy = self._abs_start
        self._end_energy = self._abs_end
        self.floor_energy: float | None = None  # noise floor (frame energy); None: no audio yet
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
            self._track_floor(float(energy.mean()), count)
            if float(energy.max()) <= self._start_energy:  # between turns: no per-frame work
                self._preroll.extend(frames)
                self._run = 0
                return events
            flags = (energy > self._start_energy).tolist()
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
                    # the floor is frozen while the caller speaks: silence is judged against it
                    floor = self.floor_energy or 0.0
                    self._end_energy = max(self._abs_end, floor * self._end_margin)
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

    @property
    def floor_dbfs(self) -> float | None:
        """The noise floor as frame RMS in dBFS (``None`` before any audio)."""
        if self.floor_energy is None:
            return None
        return float(10 * np.log10(max(self.floor_energy, 1e-3) / (self._frame * 32768.0**2)))

    def _track_floor(self, level: float, frames: int) -> None:
        floor = self.floor_energy
        if floor is None:  # assume a quiet line until the floor has been measured
            floor = min(level, self._abs_start / self._start_margin)
        else:
            rate = FLOOR_FALL_PER_FRAME if level < floor else FLOOR_RISE_PER_FRAME
            floor += (level - floor) * (1.0 - (1.0 - rate) ** frames)
        self.floor_energy = floor
        self._start_energy = max(self._abs_start, floor * self._start_margin)

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
