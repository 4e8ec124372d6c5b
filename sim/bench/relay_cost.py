"""What relaying a stream to the process that admitted its call costs: CPU and latency.

``python -m sim.bench.relay_cost [--calls 20] [--secs 20]``: two ``voicebot serve`` processes,
A and B (Twilio token set, one ``PUBLIC_URL``: an HAProxy in front, started here), one Live API
emulator in this process, and the simulated caller. Two phases of the same calls, both through
the proxy: *direct*, where webhooks and streams go to A (A serves every call), and *relayed*,
where webhooks go to A and streams to B (B relays every stream to A). It prints the CPU
seconds of each process per phase, so a relayed call's cost on the relaying process can be set
against a served call's cost on its owner, and the caller's greeting and reply latencies in
both phases (what the relay hop adds). Processes are started here and stopped by their own
handles; ``haproxy`` must be installed (``apt-get install haproxy``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from sim.bench.procs import cpu_secs, http_json
from sim.caller import CallPlan, place_call
from sim.caller.result import CallResult
from sim.emulator import EmulatorConfig, LiveEmulator
from sim.ports import free_port

REPO = Path(__file__).resolve().parent.parent.parent
TOKEN = "relay-cost-auth-token"
PERSONAS = REPO / "tests" / "personas"


def _wait_port(port: int, timeout_secs: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_secs
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_secs:g} s")


@contextlib.contextmanager
def _server(
    tmp: Path, name: str, port: int, ops: int, public: str, emu: LiveEmulator
) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("GEMINI_", "TWILIO_"))},
        "GEMINI_API_KEY": "emulator-key", "GEMINI_BASE_URL": emu.url,
        "GEMINI_CA_FILE": str(emu.ca_file), "TWILIO_AUTH_TOKEN": TOKEN, "PUBLIC_URL": public,
        "VOICEBOT_PEER_URL": f"http://127.0.0.1:{port}", "VOICEBOT_DATABASE_URL": "off",
        "VOICEBOT_LAG_GUARD_MS": "0", "VOICEBOT_MAX_CALLS": "500",
    }  # fmt: skip
    with (tmp / f"{name}.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "serve", "--port", str(port), "--ops-port",
             str(ops), "--personas", str(PERSONAS)],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
    try:
        _wait_port(ops)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def _haproxy(tmp: Path, port: int, voice: int, media: int) -> Iterator[None]:
    """HAProxy sending webhooks to ``voice`` and media streams to ``media``."""
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    config = tmp / "haproxy.cfg"
    config.write_text(
        f"""defaults
    mode http
    option http-server-close
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
frontend public
    bind 127.0.0.1:{port}
    use_backend media if {{ path_beg /twilio/media }}
    default_backend voice
backend voice
    server v 127.0.0.1:{voice}
backend media
    server m 127.0.0.1:{media}
"""
    )
    proc = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=subprocess.DEVNULL)
    try:
        _wait_port(port, 10)
        yield
    finally:
        proc.terminate()
        proc.wait(10)


async def _phase(public: str, calls: int, secs: float) -> list[CallResult]:
    plan = (
        CallPlan(hangup_after_secs=secs + 10)
        .wait_for_greeting()
        .say("caller_question.wav")
        .wait_for_reply()
        .pause(max(0.0, secs - 8))
        .hangup()
    )
    return list(
        await asyncio.gather(*[place_call(public, plan, auth_token=TOKEN) for _ in range(calls)])
    )


def _ms(values: list[float]) -> str:
    if not values:
        return "n/a"
    q = statistics.quantiles(values, n=20) if len(values) > 1 else values * 19
    return f"p50 {statistics.median(values):.0f} ms, p95 {q[18]:.0f} ms"


async def main(calls: int, secs: float) -> None:
    """Run both phases and print the table."""
    emu = LiveEmulator(EmulatorConfig(record_in_memory=False))
    await emu.start()
    ports = [free_port() for _ in range(5)]
    a, b, ops_a, ops_b, proxy = ports
    public = f"http://127.0.0.1:{proxy}"
    try:
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            with (
                _server(tmp, "a", a, ops_a, public, emu) as pa,
                _server(tmp, "b", b, ops_b, public, emu) as pb,
            ):
                for phase, media in (("direct", a), ("relayed", b)):
                    with _haproxy(tmp, proxy, a, media):
                        cpu0 = (cpu_secs(pa.pid), cpu_secs(pb.pid))
                        started = time.monotonic()
                        results = await _phase(public, calls, secs)
                        wall = time.monotonic() - started
                        cpu1 = (cpu_secs(pa.pid), cpu_secs(pb.pid))
                    ok = [r for r in results if r.ok]
                    call_secs = sum(r.duration_secs for r in ok)
                    relays = http_json(f"http://127.0.0.1:{ops_b}/stats").get("relays")
                    print(
                        f"{phase:8s} {len(ok)}/{calls} calls ok, {call_secs:.0f} call-s in "
                        f"{wall:.1f} s; CPU A {cpu1[0] - cpu0[0]:.2f} s, B "
                        f"{cpu1[1] - cpu0[1]:.2f} s (per call-minute: A "
                        f"{60 * (cpu1[0] - cpu0[0]) / max(call_secs, 1):.3f} s, B "
                        f"{60 * (cpu1[1] - cpu0[1]) / max(call_secs, 1):.3f} s); greeting "
                        f"{_ms([r.greeting_ms for r in ok if r.greeting_ms is not None])}; "
                        f"reply {_ms([x for r in ok for x in r.response_latencies_ms])}; "
                        f"B relays {relays}",
                        flush=True,
                    )
    finally:
        await emu.stop()


def cli() -> None:
    """``python -m sim.bench.relay_cost``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=20, help="concurrent calls per phase")
    parser.add_argument("--secs", type=float, default=20.0, help="length of each call")
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.secs))


if __name__ == "__main__":
    cli()
