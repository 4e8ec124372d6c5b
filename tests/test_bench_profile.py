"""The stage sampler (``bot.stage_profile``) and its table (``sim.bench.stage_table``).

Stacks filed by stage, idle left out, counts to a CPU table.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from bot import stage_profile as sp
from sim.bench import stage_table as st

pytestmark = pytest.mark.unit

STDLIB = sp._STDLIB


def _fn(filename: str, name: str, body: str) -> Callable[..., Any]:
    """A function whose code claims to live in ``filename`` (what the sampler classifies)."""
    ns: dict[str, Any] = {"sys": sys}
    exec(compile(f"def {name}(cb):\n    {body}\n", filename, "exec"), ns)  # noqa: S102
    return ns[name]  # type: ignore[no-any-return]


def _stack(*levels: tuple[str, str]) -> Callable[[Callable[[FrameType], None]], None]:
    """Nested calls, outermost first; the innermost hands its live frame to ``cb``."""
    fns = [_fn(f, n, "return cb(sys._getframe())") for f, n in levels[-1:]]
    inner = fns[0]
    for f, n in reversed(levels[:-1]):
        outer = _fn(f, n, "return nxt(cb)")
        outer.__globals__["nxt"] = inner
        inner = outer
    return inner


def test_files_map_to_stages() -> None:
    site = "/venv/lib/python3.11/site-packages"
    assert sp.stage_of_file(f"{site}/google/genai/live.py") == "gemini"
    assert sp.stage_of_file(f"{site}/onnxruntime/capi/session.py") == "vad"
    assert sp.stage_of_file("/repo/pipelines/audio/resampling.py") == "resampling"
    assert sp.stage_of_file("/repo/pipelines/audio/vad.py") == "vad"
    assert sp.stage_of_file(f"{STDLIB}/json/encoder.py") == "json"
    assert sp.stage_of_file(f"{STDLIB}/ssl.py") == "tls"
    assert sp.stage_of_file(f"{STDLIB}/asyncio/sslproto.py") == "tls"
    assert sp.stage_of_file(f"{site}/aiohttp/web_ws.py") == "twilio"
    assert sp.stage_of_file(f"{site}/pipecat/pipeline/task.py") == "pipeline"
    assert sp.stage_of_file(f"{STDLIB}/asyncio/base_events.py") == "loop"
    assert sp.stage_of_file(f"{STDLIB}/asyncio/selector_events.py") == "socket"
    assert sp.stage_of_file(f"{STDLIB}/enum.py") is None  # neutral helper: look further out
    assert sp.stage_of_file(f"{site}/numpy/core/numeric.py") == "other"


def test_a_stack_is_filed_under_its_innermost_stage_and_idle_is_left_out(tmp_path: Path) -> None:
    sampler = sp.StageSampler(tmp_path / "counts.json")
    site = "/venv/lib/python3.11/site-packages"
    gemini_json = _stack(
        (f"{STDLIB}/asyncio/events.py", "_run"),
        (f"{site}/google/genai/live.py", "receive"),
        (f"{STDLIB}/json/decoder.py", "decode"),
        (f"{STDLIB}/enum.py", "__call__"),  # neutral: the stage is json's
    )
    idle = _stack(
        (f"{STDLIB}/asyncio/base_events.py", "_run_once"),
        (f"{STDLIB}/selectors.py", "select"),
    )
    for _ in range(3):
        gemini_json(sampler.sample_stack)
    idle(sampler.sample_stack)  # waiting in select: a tick, not a busy one
    assert sampler.ticks == 4 and sampler.busy == 3
    assert sampler.leaf == {"json": 3}
    assert sampler.incl == {"json": 3, "gemini": 3, "loop": 3}
    assert sampler.funcs == {"json/decoder.py:decode": 3}
    numpy_in_resampler = _stack(
        ("/repo/pipelines/audio/resampling.py", "process"),
        (f"{site}/numpy/core/numeric.py", "convolve"),  # no stage of its own: the caller's
    )
    numpy_in_resampler(sampler.sample_stack)
    assert sampler.leaf["resampling"] == 1
    assert sampler.funcs["pipelines/audio/resampling.py:process"] == 1
    sampler.write()
    written = json.loads((tmp_path / "counts.json").read_text())
    assert written["busy"] == 4 and written["leaf"] == {"json": 3, "resampling": 1}
    # The file names its stages, in order, so the benchmark's reader needs nothing from bot/.
    assert [name for name, _ in written["stages"]][:2] == ["vad", "resampling"]


def test_window_and_breakdown_scale_shares_to_the_measured_cpu() -> None:
    before = {"t": 10.0, "ticks": 100, "busy": 50, "leaf": {"vad": 10, "gemini": 40},
              "incl": {"vad": 10, "gemini": 40, "loop": 50}, "funcs": {"a:f": 5}}  # fmt: skip
    after = {"t": 20.0, "ticks": 1100, "busy": 850, "leaf": {"vad": 410, "gemini": 240, "tls": 200},
             "incl": {"vad": 410, "gemini": 440, "tls": 200, "loop": 850},
             "funcs": {"a:f": 405, "b:g": 100},
             "stages": [[n, n.upper()] for n in ("vad", "gemini", "tls", "loop")]}  # fmt: skip
    win = st.window(before, after)
    assert win["secs"] == 10.0 and win["busy"] == 800 and win["leaf"]["vad"] == 400
    table = st.breakdown(win, cpu_pct=80.0, calls=40)
    stages = {s["stage"]: s for s in table["stages"]}
    assert [s["stage"] for s in table["stages"]][0] == "vad"  # heaviest first
    assert stages["vad"]["self_pct"] == 50.0 and stages["vad"]["cpu_pct"] == 40.0
    assert stages["vad"]["cpu_per_call_pct"] == 1.0
    assert stages["gemini"]["self_pct"] == 25.0 and stages["gemini"]["incl_pct"] == 50.0
    assert stages["loop"]["self_pct"] == 0.0 and stages["loop"]["incl_pct"] == 100.0
    assert table["top"][0] == ["a:f", 50.0]


def test_the_sampler_ticks_on_cpu_time_and_writes_its_counts(tmp_path: Path) -> None:
    path = tmp_path / "counts.json"
    sampler = sp.start_sampler(path)
    try:
        # 0.35 s of this process's CPU, however loaded the machine (a wall-clock loop got 0.1 s
        # of CPU on two cores shared by six test workers); at most 10 s of waiting for it.
        cpu_until, deadline = time.process_time() + 0.35, time.monotonic() + 10.0
        while time.process_time() < cpu_until and time.monotonic() < deadline:
            json.dumps({"k": list(range(200))})
    finally:
        sampler.stop()
    counts = st.read_counts(path)
    # 0.35 s of CPU at 200 ticks a second; this test's own loop is the busiest code.
    assert counts is not None and 40 <= counts["ticks"] <= 110
    assert counts["busy"] >= 40 and sum(counts["leaf"].values()) == counts["busy"]
    assert max(counts["funcs"], key=counts["funcs"].get).startswith(("json/", "tests/", "test_"))
    assert signal.getsignal(signal.SIGPROF) is signal.SIG_DFL  # stop() put the handler back
