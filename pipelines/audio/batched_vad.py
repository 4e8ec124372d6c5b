"""One Silero detector for the whole process: every live call's windows in one batched run.

Run one window at a time, Silero costs ~55 us per 32 ms window at 8 kHz (~66 us at 16 kHz,
plus ~50 us of BS.1770 loudness in Pipecat's analyzer): at 150 calls, over half a core. The network
is a small recurrent model whose only per-stream memory is a state (2 x 128 floats) and the
last 32 samples of context, so ``BatchedSileroVAD`` keeps those in two arrays with a row per
call (a *slot*) and, on every tick, runs the pending window of every call as ONE batch: the
rows of the calls in the batch are gathered, run, and scattered back, so each call's
recurrent state stays its own. Measured on the bench machine with the model Pipecat ships
(``python -m pipelines.audio.batched_vad``): 55 us a window alone, 21 us in a batch of 8,
17 us in 32, 16 us in 64 and more. All told on -44 dBFS line noise (model, gather/scatter,
loudness and decisions, the worker thread included), 23-26 us of CPU a window at 20-150 calls,
against 127-132 us for the per-call 16 kHz analyzer it replaced: 0.07-0.08 % of a core per
call instead of 0.40 %, the same on digital silence (no energy gate: capacity must not depend
on a silent line).

* **Tick.** ``TICK_SECS`` (16 ms, half a window): a window waits at most one tick for its
  batch, so barge-in is decided at most 16 ms later than by a per-call analyzer (measured
  2-16 ms, ``tests/test_vad_route.py``). A window that arrives while a batch runs in the
  thread goes into the next one; nothing waits on the loop.
* **Where the model runs.** A batch of up to ``INLINE_MAX_WINDOWS`` (16, ~0.3 ms) runs on the
  loop: a thread hop costs more than that. A larger one runs on the detector's own worker
  thread (ONNX Runtime releases the GIL), so the loop never blocks on inference.
* **Lifetime.** The tick task starts with the first open stream and ends when the last one
  closes (idle: no task, no thread wake-ups); ``load()`` builds the ONNX session (~50 ms,
  blocking), so the server calls it once at start in a thread. Nothing happens at import.
* **Counters** for the bench: ``windows``, ``batches``, ``inference_secs`` (time inside the
  model), ``loop_secs`` (gather, scatter and turn decisions on the loop), ``streams``.

Per call, a ``VADStream`` cuts the caller's 8 kHz PCM into 256-sample windows, hands every
scored window to its ``SpeechTurns`` (``pipelines.audio.speech_turns``) and calls
``on_change(True/False)`` when the caller starts or stops speaking.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any

import numpy as np
from loguru import logger
from pipecat.audio.vad.vad_analyzer import VADParams, VADState

from pipelines.audio.speech_turns import SAMPLE_RATE_HZ, WINDOW_SAMPLES, SpeechTurns

TICK_SECS = 0.016
INLINE_MAX_WINDOWS = 16
CONTEXT_SAMPLES = 32  # Silero's context at 8 kHz: the input row is 32 + 256 samples
STATE_WIDTH = 128
WINDOW_BYTES = WINDOW_SAMPLES * 2
# Batch rounds per tick for calls with more than one window pending (after a stall).
MAX_ROUNDS_PER_TICK = 4
FIRST_SLOTS = 64
# Speech starts on SPEAKING and stops on QUIET; STARTING and STOPPING decide nothing yet.
_DECIDED = (VADState.SPEAKING, VADState.QUIET)


def load_silero_session() -> Any:
    """Pipecat's bundled Silero ONNX model as a one-thread CPU session (blocks ~50 ms)."""
    import onnxruntime  # type: ignore[import-untyped]

    path = resources.files("pipecat.audio.vad.data").joinpath("silero_vad.onnx")
    opts = onnxruntime.SessionOptions()
    opts.inter_op_num_threads = 1
    opts.intra_op_num_threads = 1
    return onnxruntime.InferenceSession(
        str(path), providers=["CPUExecutionProvider"], sess_options=opts
    )


class VADStream:
    """One call's handle on the detector: feed 8 kHz PCM, get speech start/stop callbacks.

    Made by ``BatchedSileroVAD.open``. ``on_change`` runs on the event loop, in the detector's
    tick, so it must not block; an exception from it is logged and the stream goes on.
    """

    def __init__(
        self,
        detector: BatchedSileroVAD,
        slot: int,
        params: VADParams,
        on_change: Callable[[bool], None],
    ) -> None:
        """Use ``BatchedSileroVAD.open``."""
        self.turns = SpeechTurns(params)
        self.slot = slot
        self.closed = False
        self.pending: deque[bytes] = deque()
        self.queued = False
        self.speaking = False
        self._detector = detector
        self._on_change = on_change
        self._buffer = b""

    @property
    def params(self) -> VADParams:
        """The thresholds this stream decides with."""
        return self.turns.params

    def feed(self, pcm: bytes) -> None:
        """Add caller audio (16-bit mono PCM at 8 kHz); whole windows join the next batch."""
        if self.closed:
            return
        buf = self._buffer + pcm if self._buffer else pcm
        n = len(buf) - len(buf) % WINDOW_BYTES
        for i in range(0, n, WINDOW_BYTES):
            self.pending.append(buf[i : i + WINDOW_BYTES])
        self._buffer = buf[n:]
        if self.pending and not self.queued:
            self.queued = True
            self._detector._submit(self)

    def scored(self, confidence: float, energy_first: float, energy_second: float) -> bool:
        """One window's score; True when the model state must be reset (detector use)."""
        reset = self.turns.window(confidence, energy_first, energy_second)
        state = self.turns.state
        if (state == VADState.SPEAKING) != self.speaking and state in _DECIDED:
            self.speaking = not self.speaking
            try:
                self._on_change(self.speaking)
            except Exception as e:
                logger.exception(f"VAD speech callback failed: {e.__class__.__name__}")
        return reset

    def close(self) -> None:
        """Leave the detector (idempotent); the slot goes to the next call."""
        if not self.closed:
            self.closed = True
            self.pending.clear()
            self._detector._release(self)


class BatchedSileroVAD:
    """The process-wide batched detector (see the module docstring).

    Args:
        tick_secs: How often pending windows are run (<= 20 ms keeps barge-in prompt).
        inline_max_windows: Batches up to this size run on the loop, larger ones in a thread.
        session: An ONNX session to use (tests); None loads Pipecat's model on ``load()``.
    """

    def __init__(
        self,
        *,
        tick_secs: float = TICK_SECS,
        inline_max_windows: int = INLINE_MAX_WINDOWS,
        session: Any = None,
    ) -> None:
        """Create the detector; nothing is loaded or started until used."""
        self.tick_secs = tick_secs
        self.inline_max_windows = inline_max_windows
        self._session = session
        self._lock = threading.Lock()
        self._sr = np.array(SAMPLE_RATE_HZ, dtype=np.int64)
        self._state = np.zeros((2, FIRST_SLOTS, STATE_WIDTH), np.float32)
        self._context = np.zeros((FIRST_SLOTS, CONTEXT_SAMPLES), np.float32)
        self._free = list(range(FIRST_SLOTS - 1, -1, -1))
        self._streams: set[VADStream] = set()
        self._ready: list[VADStream] = []
        self._task: asyncio.Task[None] | None = None
        self._busy = False
        self._executor: ThreadPoolExecutor | None = None
        self.windows = 0
        self.batches = 0
        self.inference_secs = 0.0
        self.loop_secs = 0.0

    @property
    def streams(self) -> int:
        """Open streams (live calls with local VAD)."""
        return len(self._streams)

    @property
    def running(self) -> bool:
        """Whether the tick task is up (it is while any stream is open)."""
        return self._task is not None and not self._task.done()

    def stats(self) -> dict[str, float]:
        """The counters, for the bench and ``/stats``."""
        return {
            "streams": self.streams,
            "windows": self.windows,
            "batches": self.batches,
            "inference_secs": self.inference_secs,
            "loop_secs": self.loop_secs,
        }

    def load(self) -> Any:
        """The ONNX session, loaded now if it is not yet (blocking: call it in a thread)."""
        with self._lock:
            if self._session is None:
                self._session = load_silero_session()
            return self._session

    def open(self, params: VADParams, on_change: Callable[[bool], None]) -> VADStream:
        """A new call's stream; starts the tick task on this loop if it is not running."""
        if not self._free:
            self._grow()
        stream = VADStream(self, self._free.pop(), params, on_change)
        self._state[:, stream.slot] = 0.0
        self._context[stream.slot] = 0.0
        self._streams.add(stream)
        task = self._task
        loop = asyncio.get_running_loop()
        if task is None or task.done() or task.get_loop() is not loop:
            self._task = loop.create_task(self._run(), name="vad:batched-silero")
        return stream

    async def stop(self) -> None:
        """Stop the tick task and the worker thread (streams left open stay usable)."""
        task, self._task = self._task, None
        if task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                if (current := asyncio.current_task()) is not None and current.cancelling():
                    raise
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    # streams ---------------------------------------------------------------------------

    def _submit(self, stream: VADStream) -> None:
        self._ready.append(stream)

    def _release(self, stream: VADStream) -> None:
        if stream in self._streams:
            self._streams.discard(stream)
            self._free.append(stream.slot)

    def _grow(self) -> None:
        old = self._context.shape[0]
        state = np.zeros((2, old * 2, STATE_WIDTH), np.float32)
        context = np.zeros((old * 2, CONTEXT_SAMPLES), np.float32)
        state[:, :old] = self._state
        context[:old] = self._context
        self._state, self._context = state, context
        self._free.extend(range(old * 2 - 1, old - 1, -1))

    # the tick --------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        session = self._session
        if session is None:  # the server loads it at start; tests may not
            session = await asyncio.to_thread(self.load)
        next_at = loop.time()
        while self._streams:
            await self.run_pending(session, MAX_ROUNDS_PER_TICK)
            next_at += self.tick_secs
            delay = next_at - loop.time()
            if delay < 0:  # behind (a stall): start afresh, no burst of catch-up ticks
                next_at, delay = loop.time(), 0.0
            await asyncio.sleep(delay)
        if self._task is asyncio.current_task():
            self._task = None
            if self._executor is not None:  # idle: no thread left waiting either
                self._executor.shutdown(wait=False)
                self._executor = None

    async def run_pending(self, session: Any = None, rounds: int | None = None) -> None:
        """Run the pending windows now, one batch per round (all of them when ``rounds`` is None).

        The tick does this; tests and benchmarks call it to step the detector by hand.
        """
        if self._busy:  # a batch is in the worker thread: its streams wait for the next tick
            return
        if session is None:
            session = self._session if self._session is not None else self.load()
        done = 0
        self._busy = True
        try:
            while self._ready and (rounds is None or done < rounds):
                await self._run_batch(session)
                done += 1
        finally:
            self._busy = False

    async def _run_batch(self, session: Any) -> None:
        """One window of every ready stream through the model (one batch)."""
        t0 = time.perf_counter()
        batch = [s for s in self._ready if not s.closed]
        self._ready = []
        if not batch:
            return
        slots = np.fromiter((s.slot for s in batch), np.intp, len(batch))
        pcm = b"".join([s.pending.popleft() for s in batch])
        x = np.frombuffer(pcm, "<i2").astype(np.float32).reshape(len(batch), WINDOW_SAMPLES)
        x *= 1.0 / 32768.0
        rows = np.concatenate((self._context[slots], x), axis=1)
        state = self._state[:, slots]
        energy = np.square(x).reshape(len(batch), 2, -1).sum(axis=2).tolist()
        t1 = time.perf_counter()
        if len(batch) <= self.inline_max_windows:
            out, new_state, secs = _infer(session, rows, state, self._sr)
        else:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="vad-batch")
            loop = asyncio.get_running_loop()
            try:
                out, new_state, secs = await loop.run_in_executor(
                    self._executor, _infer, session, rows, state, self._sr
                )
            except asyncio.CancelledError:  # stopped mid-batch: its streams may queue again
                for stream in batch:
                    stream.queued = False
                raise
        t2 = time.perf_counter()
        live = [i for i, s in enumerate(batch) if not s.closed]  # closed while it ran
        if len(live) < len(batch):
            batch = [batch[i] for i in live]
            slots, rows, new_state = slots[live], rows[live], new_state[:, live]
            out, energy = out[live], [energy[i] for i in live]
        self._state[:, slots] = new_state
        self._context[slots] = rows[:, -CONTEXT_SAMPLES:]
        for i, (stream, conf) in enumerate(zip(batch, out[:, 0].tolist(), strict=True)):
            if stream.scored(conf, *energy[i]):
                self._state[:, stream.slot] = 0.0
                self._context[stream.slot] = 0.0
            if stream.pending and not stream.closed:
                self._ready.append(stream)
            else:
                stream.queued = False
        self.windows += len(batch)
        self.batches += 1
        self.inference_secs += secs
        self.loop_secs += (t1 - t0) + (time.perf_counter() - t2)


def _infer(session: Any, rows: np.ndarray, state: np.ndarray, sr: np.ndarray) -> Any:
    """(confidences [B, 1], new state [2, B, 128], seconds spent)."""
    t0 = time.perf_counter()
    out, new_state = session.run(None, {"input": rows, "state": state, "sr": sr})
    return out, new_state, time.perf_counter() - t0


def _measure() -> None:
    """Print the model's cost per window, alone and batched (``python -m ...batched_vad``)."""
    session = load_silero_session()
    sr = np.array(SAMPLE_RATE_HZ, dtype=np.int64)
    rng = np.random.default_rng(1)
    for size in (1, 2, 8, 16, 32, 64, 128, 256):
        rows = (rng.standard_normal((size, CONTEXT_SAMPLES + WINDOW_SAMPLES)) * 0.01).astype(
            np.float32
        )
        state = np.zeros((2, size, STATE_WIDTH), np.float32)
        for _ in range(5):
            _infer(session, rows, state, sr)
        runs = max(20, 4000 // size)
        spent = sum(_infer(session, rows, state, sr)[2] for _ in range(runs))
        per_batch = spent / runs
        print(
            f"batch {size:4d}: {per_batch * 1e3:7.3f} ms a batch, "
            f"{per_batch / size * 1e6:6.1f} us a window"
        )


if __name__ == "__main__":
    _measure()
