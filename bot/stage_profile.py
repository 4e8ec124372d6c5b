"""Where the server's CPU goes, by stage: a low-cost stack sampler, opt-in.

``voicebot serve`` runs :class:`StageSampler` only when ``VOICEBOT_PROFILE=PATH`` is set (off by
default; ``bot/serve_cmd.py`` imports this module lazily then). Every ``1/SAMPLE_HZ`` seconds of
the process's CPU time (``ITIMER_PROF``, so an idle server is not sampled) a ``SIGPROF``
handler files the main thread's stack under the stage of its innermost named frame
(:data:`STAGES`: local VAD, resampling, JSON + base64, TLS, the Gemini receive/send path, the
Twilio socket, the Pipecat pipeline, the server, socket I/O, the event loop); a small thread
writes the cumulative counts to ``PATH`` once a second (JSON, replaced atomically). The
benchmark (``sim.bench.stage_table``) reads the file at the start and the end of a load level's
steady window; the difference times the process's measured CPU gives each stage's share of a
core. The file carries the stage labels in order, so the reader needs nothing from here.
Frames of libraries no stage names (numpy, pydantic…) and stdlib
helpers (enum, typing…) count for their caller's stage.

Why a signal and not a thread looking at ``sys._current_frames()``: a thread needs the GIL to
look, so it only ever catches the loop inside a call that releases the GIL (a socket send, a
numpy product, ONNX), which it then over-counts several times over. The handler runs at the next
bytecode boundary instead, so a C call is filed under the Python function that made it.
Limits, stated with the figures: CPU of other threads (ONNX Runtime's, the VAD's batch worker)
ticks the same timer and is filed under whatever the main thread is doing (the VAD's own
counters measure its cost directly); garbage collection is filed under the frame that triggered
it; a tick landing while the main thread waits (``select``) counts as idle. The handler costs
CPU too: compare the profiled level's CPU with the same level unprofiled (the bench prints
both).
"""

from __future__ import annotations

import json
import os
import signal
import sysconfig
import threading
import time
from collections import Counter
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

SAMPLE_HZ = 200.0  # per second of the process's CPU time
WRITE_EVERY_SECS = 1.0
_UNSEEN = "?"  # a code object not yet classified
REPO = str(Path(__file__).resolve().parent.parent)

# (stage, label, path fragments); the first stage whose fragment is in a frame's file wins.
STAGES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("vad", "local VAD (Silero, loudness)",
     ("/pipelines/audio/vad", "/pipelines/audio/batched_vad", "/pipelines/audio/speech_turns",
      "/pipelines/audio/silero", "/onnxruntime/", "/pipecat/audio/vad/",
      "/pipecat/audio/volume")),
    ("resampling", "resampling + other audio code",
     ("/pipelines/audio/resampl", "/soxr/", "/pipecat/audio/resamplers/", "/pipecat/audio/utils",
      "/pipelines/audio/")),
    ("json", "JSON + base64", ("/json/", "/base64.py")),
    ("tls", "TLS", ("/ssl.py", "/asyncio/sslproto.py")),
    ("gemini", "Gemini path (google-genai, websockets, ours)",
     ("/google/genai/", "/websockets/", "/pipelines/gemini/", "/pipecat/services/google/")),
    ("twilio", "Twilio socket (aiohttp, serializer, transport)",
     ("/aiohttp/", "/pipelines/twilio/", "/pipecat/serializers/", "/pipecat/transports/",
      "/yarl/", "/multidict/")),
    ("pipeline", "Pipecat pipeline + our call code", ("/pipecat/", "/pipelines/")),
    ("server", "server (bot/)", ("/bot/",)),
    ("logging", "logging", ("/loguru/", "/logging/")),
    ("socket", "socket I/O (asyncio transports: send/recv calls)",
     ("/asyncio/selector_events.py",)),
    ("loop", "event loop (asyncio: scheduling, tasks, timers)",
     ("/asyncio/", "/selectors.py", "/uvloop/")),
)  # fmt: skip
LABELS = {name: label for name, label, _ in STAGES} | {"other": "other"}
_STDLIB = sysconfig.get_paths()["stdlib"]
# Innermost frames that wait rather than work: (file name, function).
_IDLE_LEAVES = {
    ("selectors.py", "select"),
    ("threading.py", "wait"),
    ("threading.py", "_wait_for_tstate_lock"),
    ("queue.py", "get"),
    ("thread.py", "_worker"),  # concurrent.futures: an idle worker waits on its C queue
    ("base_events.py", "run_forever"),  # uvloop: the C loop below is waiting (or its own work)
    ("base_events.py", "run_until_complete"),
    ("runners.py", "run"),
}


def stage_of_file(filename: str) -> str | None:
    """The stage a source file belongs to; None for a neutral stdlib helper (enum, typing…)."""
    path = filename.replace("\\", "/")
    for name, _label, fragments in STAGES:
        if any(f in path for f in fragments):
            return name
    if path.startswith(_STDLIB) and "site-packages" not in path:
        return None
    return "other"


class StageSampler:
    """Samples the main thread's stack on CPU-time ticks and writes cumulative stage counts."""

    def __init__(self, path: Path, hz: float = SAMPLE_HZ) -> None:
        """Sample every ``1/hz`` s of process CPU time; write counts to ``path`` every second."""
        self.path, self.interval = path, 1.0 / hz
        self.ticks = 0
        self.busy = 0  # ticks whose stack was working (not waiting)
        # exclusive: the innermost named stage of each busy stack ("other" when none is)
        self.leaf: Counter[str] = Counter()
        self.incl: Counter[str] = Counter()  # inclusive: every named stage on the busy stack
        self.funcs: Counter[str] = Counter()  # innermost recognisable function, for the top list
        self._codes: dict[CodeType, str | None] = {}
        self._previous: Any = signal.SIG_DFL
        self._stop = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="stage-sampler", daemon=True)

    def start(self) -> StageSampler:
        """Install the SIGPROF handler and timer (main thread only) and the writer thread."""
        self._previous = signal.signal(signal.SIGPROF, self._on_tick)
        signal.setitimer(signal.ITIMER_PROF, self.interval, self.interval)
        self._writer.start()
        return self

    def stop(self) -> None:
        """Stop the timer and write the last counts."""
        signal.setitimer(signal.ITIMER_PROF, 0.0)
        signal.signal(signal.SIGPROF, self._previous)
        self._stop.set()
        self._writer.join(2.0)

    def _on_tick(self, _signum: int, frame: FrameType | None) -> None:
        if frame is not None:
            self.sample_stack(frame)

    def _stage(self, code: CodeType) -> str | None:
        st = self._codes.get(code, _UNSEEN)
        if st == _UNSEEN:
            st = stage_of_file(code.co_filename)
            self._codes[code] = st
        return st

    def sample_stack(self, frame: FrameType) -> None:
        """File one sample: the stack whose innermost frame is ``frame``."""
        self.ticks += 1
        code = frame.f_code
        if (os.path.basename(code.co_filename), code.co_name) in _IDLE_LEAVES:
            return
        self.busy += 1
        leaf: CodeType | None = None  # innermost frame of a named stage
        other: CodeType | None = None  # innermost frame of an unnamed library
        seen: set[str] = set()
        f: FrameType | None = frame
        while f is not None:
            st = self._stage(f.f_code)
            if st == "other":
                other = other or f.f_code
            elif st is not None:
                leaf = leaf or f.f_code
                seen.add(st)
            f = f.f_back
        code = leaf or other or frame.f_code
        self.leaf[(self._stage(leaf) or "other") if leaf else "other"] += 1
        self.funcs[f"{_short(code.co_filename)}:{code.co_name}"] += 1
        self.incl.update(seen)

    def snapshot(self) -> dict[str, Any]:
        """The cumulative counts (what is written to the file)."""
        return {
            "t": time.monotonic(),
            "hz": 1.0 / self.interval,
            "stages": [[name, label] for name, label in LABELS.items()],
            "ticks": self.ticks,
            "busy": self.busy,
            "leaf": dict(self.leaf),
            "incl": dict(self.incl),
            "funcs": dict(self.funcs.most_common(200)),
        }

    def write(self) -> None:
        """Replace the counts file atomically."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.snapshot()))
        os.replace(tmp, self.path)

    def _write_loop(self) -> None:
        while not self._stop.wait(WRITE_EVERY_SECS):
            self.write()
        self.write()


def _short(filename: str) -> str:
    path = filename.replace("\\", "/")
    for marker in ("/site-packages/", REPO + "/", _STDLIB + "/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return "/".join(path.rsplit("/", 3)[-3:])


def start_sampler(path: Path) -> StageSampler:
    """Start a sampler writing to ``path`` (``VOICEBOT_PROFILE``); it runs until exit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return StageSampler(path).start()
