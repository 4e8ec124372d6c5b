"""The bare-relay baseline the capacity benchmark measures our server against.

A copy, kept with the project so ``make bench`` works from a fresh clone, of
``../shared/bench/relay_baseline.py`` (the team's shared benchmark floor, 2026-11-21; its README
has the figures it was measured at). Only the formatting and type annotations differ (ruff,
mypy): the per-frame work is the same, and ``python -m sim.bench --baseline PATH`` still runs
the shared one (or any other) instead.

A bare Twilio Media Streams relay on aiohttp, no framework, one process. It does the per-frame
work our server must do for each call (µ-law decode, stateful 8k->16k resample, the Gemini
``realtime_input`` JSON built but not sent; a 24 kHz source resampled to 8 kHz, µ-law,
``media`` JSON, sent in 40 ms chunks on absolute real-time deadlines) and nothing else: the
practical floor for Python. It answers the incoming-call webhook like our server, so the same
load generator drives both.

Per call:

* in: media (JSON) -> b64decode -> ``audioop.ulaw2lin`` -> ``soxr.ResampleStream`` 8k->16k
  (stateful, VHQ like Pipecat) -> urlsafe-b64 + ``json.dumps`` as a Gemini ``realtime_input``
  message (built, not sent);
* out: a sender task that generates a 24 kHz sine, ``soxr.ResampleStream`` 24k->8k (stateful),
  ``audioop.lin2ulaw``, b64 + ``json.dumps`` ``media`` and sends one 40 ms chunk per 40 ms on
  absolute deadlines (real time).

usage: ``python sim/bench/relay_baseline.py PORT [--uvloop]``: ``POST /twilio/voice`` -> TwiML
with ``<Connect><Stream url=ws://HOST/twilio/media>``; ``GET /healthz``; ``GET /stats``.
"""

from __future__ import annotations

import asyncio
import audioop
import base64
import contextlib
import json
import sys

import numpy as np
import soxr
from aiohttp import WSMsgType, web

QUALITY = "VHQ"  # same preset Pipecat's SOXRStreamAudioResampler uses
OUT_RATE_SRC = 24000
CHUNK_S = 0.040
SRC_SAMPLES = int(OUT_RATE_SRC * CHUNK_S)  # 960 samples of 24 kHz per 40 ms
OUT_BYTES = 320 * 2  # 40 ms of 8 kHz s16 = 640 bytes -> 320 bytes mu-law
TWO_PI_F = 2 * np.pi * 440.0 / OUT_RATE_SRC

STATS = {
    "calls_active": 0,
    "calls_total": 0,
    "in_frames": 0,
    "in_bytes": 0,
    "gemini_bytes": 0,
    "out_frames": 0,
}


class SineSource:
    """Continuous 24 kHz sine, generated per chunk with a running phase."""

    def __init__(self) -> None:
        """Start at phase 0."""
        self.n = 0

    def next_chunk(self) -> np.ndarray:
        """The next 40 ms of the sine, int16."""
        t = np.arange(self.n, self.n + SRC_SAMPLES)
        self.n += SRC_SAMPLES
        return (np.sin(TWO_PI_F * t) * 8000).astype(np.int16)


async def sender(ws: web.WebSocketResponse, stream_sid: str) -> None:
    """Send one 40 ms ``media`` chunk per 40 ms on absolute deadlines until the socket closes."""
    loop = asyncio.get_running_loop()
    src = SineSource()
    rs = soxr.ResampleStream(OUT_RATE_SRC, 8000, 1, dtype="int16", quality=QUALITY)
    buf = bytearray()
    nxt = loop.time()
    while not ws.closed:
        while len(buf) < OUT_BYTES:  # keep exactly one 40 ms chunk ready per tick
            buf += rs.resample_chunk(src.next_chunk()).tobytes()
        pcm = bytes(buf[:OUT_BYTES])
        del buf[:OUT_BYTES]
        ulaw = audioop.lin2ulaw(pcm, 2)
        msg = json.dumps(
            {
                "event": "media",
                "streamSid": stream_sid,
                "media": {"payload": base64.b64encode(ulaw).decode()},
            }
        )
        try:
            await ws.send_str(msg)
        except Exception:  # noqa: BLE001 - the caller hung up: this call's sender ends
            return
        STATS["out_frames"] += 1
        nxt += CHUNK_S
        delay = nxt - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        # if late, send the next one at once (absolute deadlines catch up)


async def twilio_ws(request: web.Request) -> web.WebSocketResponse:
    """One call's Media Stream: decode, resample and re-encode caller audio; start the sender."""
    ws = web.WebSocketResponse(max_msg_size=1 << 20)
    await ws.prepare(request)
    rs_in = soxr.ResampleStream(8000, 16000, 1, dtype="int16", quality=QUALITY)
    send_task: asyncio.Task[None] | None = None
    STATS["calls_active"] += 1
    STATS["calls_total"] += 1
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                if msg.type == WSMsgType.ERROR:
                    break
                continue
            ev = json.loads(msg.data)
            kind = ev.get("event")
            if kind == "media":
                ulaw = base64.b64decode(ev["media"]["payload"])
                pcm8 = audioop.ulaw2lin(ulaw, 2)
                pcm16 = rs_in.resample_chunk(np.frombuffer(pcm8, dtype=np.int16)).tobytes()
                STATS["in_frames"] += 1
                # soxr VHQ emits in bursts (~1516 samples every ~4.7 chunks); skip empties
                if pcm16:
                    audio = {
                        "data": base64.urlsafe_b64encode(pcm16).decode(),
                        "mime_type": "audio/pcm;rate=16000",
                    }
                    gem = json.dumps({"realtime_input": {"audio": audio}})
                    STATS["in_bytes"] += len(pcm16)
                    STATS["gemini_bytes"] += len(gem)
            elif kind == "start":
                stream_sid = ev["start"]["streamSid"]
                send_task = asyncio.create_task(sender(ws, stream_sid))
            elif kind == "stop":
                break
            # connected / dtmf / mark: ignored
    finally:
        STATS["calls_active"] -= 1
        if send_task:
            send_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await send_task
        if not ws.closed:
            await ws.close()
    return ws


async def stats(_request: web.Request) -> web.Response:
    """``GET /stats``: the counters."""
    return web.json_response(STATS)


async def voice(request: web.Request) -> web.Response:
    """``POST /twilio/voice``: TwiML connecting the call to this server's media socket."""
    host = request.host
    twiml = (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
        f'<Stream url="ws://{host}/twilio/media"><Parameter name="persona" value="baseline"/>'
        "</Stream></Connect></Response>"
    )
    return web.Response(text=twiml, content_type="text/xml")


async def healthz(_request: web.Request) -> web.Response:
    """``GET /healthz``."""
    return web.Response(text="ok")


def main() -> None:
    """Serve on 127.0.0.1:PORT until killed."""
    port = int(sys.argv[1])
    if "--uvloop" in sys.argv:
        import uvloop

        uvloop.install()
    app = web.Application()
    app.router.add_get("/twilio/media", twilio_ws)
    app.router.add_post("/twilio/voice", voice)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/stats", stats)
    web.run_app(
        app,
        host="127.0.0.1",
        port=port,
        print=lambda *_: print(f"READY on {port}", flush=True),
        access_log=None,
        backlog=1024,
    )


if __name__ == "__main__":
    main()
