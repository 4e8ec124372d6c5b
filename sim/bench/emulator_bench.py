"""Load benchmark of the Live API emulator: many sessions streaming caller audio and barging in.

Starts the emulator in a subprocess (so client work is not counted), drives N raw
``websockets`` sessions that stream ``caller_hello.wav`` at 16 kHz in real time with pauses (the
13.8 s replies get interrupted by the next utterance), over the simulated caller's line noise
(``--line-noise-dbfs``, default as the caller's; ``off`` for digital silence), and prints the
emulator's own event-loop lag, read from its ``GET /stats`` endpoint::

    python -m sim.bench.emulator_bench --sessions 200 --secs 20
"""

from __future__ import annotations

import argparse
import asyncio
import audioop
import base64
import json
import os
import random
import ssl
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import numpy as np
import websockets

from sim.caller.line_noise import (
    DEFAULT_LINE_NOISE_COLOR,
    DEFAULT_LINE_NOISE_DBFS,
    noise_bank,
    parse_dbfs,
)
from sim.emulator.caller_audio import read_caller_wav
from sim.emulator.config import ASSETS_DIR

PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
SETUP = {
    "setup": {
        "model": "models/gemini-3.8-live",
        "generationConfig": {"response_modalities": ["AUDIO"], "temperature": 0.5},
        "inputAudioTranscription": {},
        "outputAudioTranscription": {},
        "sessionResumption": {},
        "realtimeInputConfig": {"automatic_activity_detection": {"silence_duration_ms": 500}},
    }
}


@dataclass
class Counters:
    """What the clients saw."""

    messages: int = 0
    audio_bytes: int = 0
    replies: int = 0
    interrupted: int = 0
    errors: int = 0


def line_noise_16k(dbfs: float | None, secs: float) -> np.ndarray:
    """``secs`` of the caller's line noise as it reaches the model (µ-law 8 kHz -> 16 kHz)."""
    n = int(secs * 16_000)
    if dbfs is None:
        return np.zeros(n, dtype=np.int16)
    ulaw = b"".join(noise_bank(dbfs, DEFAULT_LINE_NOISE_COLOR).raw)
    pcm8 = np.frombuffer(audioop.ulaw2lin(ulaw, 2), dtype=np.int16)
    pcm16 = np.repeat(pcm8, 2)  # a crude 2x upsampler is enough for a level/VAD load test
    return np.resize(pcm16, n)


def audio_messages(chunk_ms: int, noise_dbfs: float | None) -> tuple[list[str], list[str]]:
    """The caller's speech (noise under it) and 5 s of line noise, as realtimeInput messages."""
    speech_pcm = read_caller_wav(ASSETS_DIR / "caller_hello.wav", 16_000)
    noise = line_noise_16k(noise_dbfs, 5.0 + speech_pcm.size / 16_000)
    mixed = speech_pcm.astype(np.int32) + noise[: speech_pcm.size]
    pcm = np.clip(mixed, -32768, 32767).astype(np.int16).tobytes()
    quiet = noise[speech_pcm.size :].tobytes()
    step = 32 * chunk_ms

    def message(data: bytes) -> str:
        b64 = base64.urlsafe_b64encode(data).decode()
        return json.dumps(
            {"realtime_input": {"audio": {"data": b64, "mime_type": "audio/pcm;rate=16000"}}}
        )

    speech = [message(pcm[i : i + step]) for i in range(0, len(pcm), step)]
    return speech, [message(quiet[i : i + step]) for i in range(0, len(quiet) - step + 1, step)]


async def start_emulator(think_ms: int) -> tuple[asyncio.subprocess.Process, dict[str, str]]:
    """Run ``python -m sim.emulator.cmd`` and read its JSON line."""
    profile = os.environ.get("EMULATOR_BENCH_PROFILE")  # a path: run the emulator under cProfile
    prefix = ["-m", "cProfile", "-o", profile] if profile else []
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *prefix, "-m", "sim.emulator.cmd", "--think-ms", str(think_ms),
        "--log-level", "WARNING", stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    return proc, json.loads(line)


async def session(
    url: str, ctx: ssl.SSLContext, plan: list[str], offset: int, counters: Counters,
    ticks: asyncio.Queue[int], chunk_secs: float,
) -> None:  # fmt: skip
    """One caller: stream the plan in real time from ``offset``, read everything."""
    try:
        wss = url.replace("https://", "wss://") + PATH
        headers = {"x-goog-api-key": "bench"}
        async with websockets.connect(
            wss, ssl=ctx, max_size=None, compression=None, additional_headers=headers
        ) as ws:
            await ws.send(json.dumps(SETUP))
            await ws.recv()

            async def reader() -> None:
                async for raw in ws:
                    counters.messages += 1
                    if '"inlineData"' in raw:
                        counters.audio_bytes += len(raw) * 3 // 4
                    elif '"turnComplete"' in raw:
                        counters.replies += 1
                    elif '"interrupted"' in raw:
                        counters.interrupted += 1

            read_task = asyncio.create_task(reader(), name="bench:reader")
            start, i = time.monotonic(), 0
            try:
                while True:
                    await ws.send(plan[(offset + i) % len(plan)])
                    i += 1
                    await asyncio.sleep(max(0.0, start + i * chunk_secs - time.monotonic()))
                    if not ticks.empty():
                        break
            finally:
                read_task.cancel()
                try:
                    await read_task
                except (asyncio.CancelledError, websockets.ConnectionClosed):
                    pass
    except (OSError, websockets.WebSocketException) as exc:
        if not counters.errors:
            print(f"emulator_bench: first session error: {exc!r}", file=sys.stderr)
        counters.errors += 1


async def bench(
    sessions: int, secs: float, chunk_ms: int, think_ms: int, noise_dbfs: float | None
) -> dict[str, object]:
    """Run the benchmark; the emulator's and the clients' figures."""
    proc, info = await start_emulator(think_ms)
    ctx = ssl.create_default_context(cafile=info["ca_file"])
    speech, quiet = audio_messages(chunk_ms, noise_dbfs)
    rng = random.Random(7)
    counters, stop = Counters(), asyncio.Queue[int]()
    tasks = []
    for n in range(sessions):
        plan = speech + quiet[: int(rng.uniform(2.0, 5.0) * 1000 / chunk_ms)]
        tasks.append(asyncio.create_task(
            session(info["url"], ctx, plan, rng.randrange(len(plan)), counters, stop,
                    chunk_ms / 1000), name=f"bench:session-{n}"))  # fmt: skip
        await asyncio.sleep(2.0 / sessions)  # ramp up over 2 s
    async with aiohttp.ClientSession() as http:
        stats_url = info["url"] + "/stats"
        await asyncio.sleep(1.0)
        async with http.get(stats_url + "?reset=1", ssl=ctx) as resp:
            await resp.json()
        await asyncio.sleep(secs)
        async with http.get(stats_url, ssl=ctx) as resp:
            stats = await resp.json()
    stop.put_nowait(1)
    await asyncio.gather(*tasks)
    proc.terminate()
    await proc.wait()
    return {"emulator": stats, "clients": counters.__dict__}


def main(argv: list[str] | None = None) -> int:
    """Parse flags, run, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--secs", type=float, default=20.0, help="measured load phase")
    parser.add_argument("--chunk-ms", type=int, default=20, help="caller audio per message")
    parser.add_argument("--think-ms", type=int, default=300)
    parser.add_argument(
        "--line-noise-dbfs",
        type=parse_dbfs,
        default=DEFAULT_LINE_NOISE_DBFS,
        metavar="DBFS|off",
        help=f"caller line noise ({DEFAULT_LINE_NOISE_COLOR}; default {DEFAULT_LINE_NOISE_DBFS})",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    noise = args.line_noise_dbfs
    result = asyncio.run(bench(args.sessions, args.secs, args.chunk_ms, args.think_ms, noise))
    result["line_noise_dbfs"] = noise
    lag = result["emulator"]["loop_lag"]  # type: ignore[index]
    print(json.dumps(result, indent=2))
    print(
        f"{args.sessions} sessions, {args.chunk_ms} ms chunks, {args.secs:g} s, line noise "
        f"{'off' if noise is None else f'{noise:g} dBFS'}: emulator loop "
        f"lag p50 {lag['p50_ms']} ms, p99 {lag['p99_ms']} ms, max {lag['max_ms']} ms"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if lag["p99_ms"] < 20 else 2


if __name__ == "__main__":
    sys.exit(main())
