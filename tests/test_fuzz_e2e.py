"""Fuzzing the public surfaces of the real server, with a real call alongside (issue 13).

Hypothesis (``sim.fuzz``, in a process of its own) draws batches of attacks on the media socket
(junk before ``start``, junk on a running call) and on the webhooks; the real server (aiohttp,
Pipecat, google-genai, the Live API emulator) answers over loopback. Oracles: no unhandled
exception anywhere (loguru ERROR or traceback, the event loop's handler, aiohttp's server log),
no 5xx, no WebSocket close but 1000/1001/1008/1009/1013 (1011 only for a stream that sent no
media); and a neighbour call, placed over and over for the whole run by the simulated Twilio
caller, hears no gap and ends normally every time.

Deterministic (seed 13, no example database): a failing batch is shrunk to a minimal one and
printed. Figures are printed (``-s``), and written as JSON to the file ``VOICEBOT_FUZZ_REPORT``
names, if set. More inputs, another seed, every crash listed instead of the first::

    VOICEBOT_FUZZ_INPUTS=100000 VOICEBOT_FUZZ_SEED=random VOICEBOT_FUZZ_KEEP_GOING=1 \\
        .venv/bin/pytest tests/test_fuzz_e2e.py -s -p no:cacheprovider --timeout 0
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from sim.caller import CallPlan, CallResult
from sim.fuzz.drawer import Drawer
from sim.fuzz.runner import DEFAULT_SEED, Figures, fuzz, random_seed
from sim.testing import RunningServer

pytestmark = [pytest.mark.e2e, pytest.mark.cpu_heavy]

TOKEN = "fuzz-auth-token"
# The issue asks for 10,000 inputs a run; the two variants share them.
INPUTS = int(os.environ.get("VOICEBOT_FUZZ_INPUTS", "10000"))
_SEED = os.environ.get("VOICEBOT_FUZZ_SEED", str(DEFAULT_SEED))
SEED = random_seed() if _SEED == "random" else int(_SEED)
# 1: record every crash and go on (to list them all) instead of stopping at the first one.
KEEP_GOING = os.environ.get("VOICEBOT_FUZZ_KEEP_GOING") == "1"
# The caller hears a hole when the phone's buffer runs dry inside a reply; none may last longer.
MAX_NEIGHBOUR_GAP_MS = 100.0


async def _neighbour_calls(server: RunningServer, done: asyncio.Event, token: str | None):
    """Calls placed one after another until ``done``: each hears the 3.9 s greeting, hangs up."""
    results: list[CallResult] = []
    plan = CallPlan().wait_for_greeting().hangup()
    while not done.is_set() or not results:
        results.append(await server.call(plan, auth_token=token))
    return results


async def _fuzz_with_neighbour(server: RunningServer, token: str | None, inputs: int, seed: int):
    # Hypothesis draws in a process of its own, warmed up before the neighbour calls start.
    async with Drawer(min_inputs=inputs, fuzz_seed=seed, keep_going=KEEP_GOING) as drawer:
        done = asyncio.Event()
        neighbour = asyncio.create_task(_neighbour_calls(server, done, token), name="neighbour")
        try:
            figures = await fuzz(server.url, drawer, auth_token=token)
        finally:
            done.set()
        results = await neighbour
    return figures, results


def _report(name: str, figures: Figures, results: list[CallResult]) -> float:
    longest = max((r.gap_max_ms for r in results), default=0.0)
    frame_gap = max((r.interarrival_max_ms or 0.0 for r in results), default=0.0)
    print(
        f"\n[{name}] {figures.summary()}\n"
        f"  neighbour: {len(results)} calls, all ended normally: {all(r.ok for r in results)}, "
        f"longest gap heard {longest:.0f} ms, longest bot-frame gap {frame_gap:.0f} ms"
    )
    if path := os.environ.get("VOICEBOT_FUZZ_REPORT"):
        out = Path(path)
        record = json.loads(out.read_text()) if out.exists() else {}
        record[name] = {
            "seed": figures.seed,
            "inputs_tried": figures.inputs_tried,
            "inputs": figures.inputs,
            "crashes": figures.crashes,
            "problems": figures.problems,
            "secs": round(figures.secs, 1),
            "neighbour_calls": len(results),
            "neighbour_longest_gap_ms": longest,
            "neighbour_longest_frame_gap_ms": frame_gap,
        }
        out.write_text(json.dumps(record, indent=2))
    return longest


@pytest.mark.timeout(120)
async def test_fuzz_media_socket_and_webhooks_without_a_token(make_server):
    server = await make_server(max_calls=100_000)
    figures, results = await _fuzz_with_neighbour(server, None, INPUTS // 2, SEED)
    longest = _report("no token", figures, results)

    assert figures.crashes == 0, figures.summary()
    assert figures.inputs_tried >= INPUTS // 2
    assert all(r.ok for r in results), [r.failure for r in results]
    assert longest <= MAX_NEIGHBOUR_GAP_MS, [r.gaps_ms for r in results]


@pytest.mark.timeout(120)
async def test_fuzz_media_socket_and_webhooks_with_a_token(make_server):
    server = await make_server(twilio_auth_token=TOKEN, max_calls=100_000)
    figures, results = await _fuzz_with_neighbour(server, TOKEN, INPUTS - INPUTS // 2, SEED + 1)
    longest = _report("token", figures, results)

    assert figures.crashes == 0, figures.summary()
    assert figures.inputs_tried >= INPUTS - INPUTS // 2
    assert all(r.ok for r in results), [r.failure for r in results]
    assert longest <= MAX_NEIGHBOUR_GAP_MS, [r.gaps_ms for r in results]
