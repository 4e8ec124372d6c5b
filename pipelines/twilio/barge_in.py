"""What a barge-in cuts from the bot's audio: the interrupted reply's, queued or being written.

Part of the output processor (``transport_output``). On ``InterruptionFrame`` no audio of the
interrupted reply may leave after the ``clear``: interruptible audio frames created before the
interruption are dropped on arrival (and any arriving while the ``clear`` goes out), and the
run being written stops at its next chunk (the writer checks before every chunk). Audio the
output makes itself (end silence, DTMF tones) and the goodbye clip are not interruptible.
"""

from __future__ import annotations

from pipecat.frames.frames import OutputAudioRawFrame
from pipecat.utils.utils import obj_id


class InterruptedAudio:
    """Tells audio of an interrupted reply from audio that may still go out."""

    def __init__(self) -> None:
        # Interruptible audio frames created before this id belong to an interrupted reply.
        self._stale_before_id = 0
        # True while an interruption's ``clear`` goes out: interruptible audio arriving is dropped.
        self.clearing = False
        # Bumped by every interruption: the run being written stops if it changed.
        self._epoch = 0
        self._writing_epoch = 0
        self._writing: OutputAudioRawFrame | None = None

    def dropped_on_arrival(self, frame: OutputAudioRawFrame) -> bool:
        """Whether ``frame``, just arrived, belongs to an interrupted reply."""
        return frame.interruptible and (self.clearing or frame.id < self._stale_before_id)

    def writing(self, frame: OutputAudioRawFrame | None) -> None:
        """The writer took ``frame`` from the queue (None: it is done with it)."""
        self._writing = frame
        if frame is not None:
            self._writing_epoch = self._epoch

    def interrupted(self) -> bool:
        """An interruption came (call before any await); whether the frame being written stays.

        Returns:
            True when a frame is being written that the interruption does not cut.
        """
        self._stale_before_id = obj_id()
        self._epoch += 1
        writing = self._writing
        return writing is not None and not writing.interruptible

    def is_stale(self, frame: OutputAudioRawFrame) -> bool:
        """Whether the rest of ``frame``, being written, was cut by an interruption since."""
        return frame.interruptible and self._epoch != self._writing_epoch
