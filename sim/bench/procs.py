"""Processes for ``sim.bench``: start pinned servers, sample their CPU and memory, stop them.

Every process is started here and stopped by its own PID (never by name): other people run
servers on the same machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent
BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
EMULATOR_PACE = 1.5  # the emulator streams replies this much faster than real time
# A server on port P serves its operations listener (/stats) on P + OPS_PORT_OFFSET.
OPS_PORT_OFFSET = 100
OUR_BASELINE = Path(__file__).resolve().parent / "relay_baseline.py"


def cpu_secs(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), from ``/proc``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MB, from ``/proc`` (0 if it has none)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Proc:
    """A child process with its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    port: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        """The child's PID."""
        return self.popen.pid

    def cpu_secs(self) -> float:
        """User + system CPU seconds of the process (all its threads)."""
        return cpu_secs(self.pid)

    def rss_mb(self) -> float:
        """Resident memory in MB."""
        return rss_mb(self.pid)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; by PID only."""
        if self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)


def _spawn(
    name: str, cmd: list[str], core: int, log_dir: Path, env: dict[str, str], nice: int = 0
) -> Proc:
    log = log_dir / f"{name}.log"
    fh = log.open("wb")
    niced = ["nice", "-n", str(nice)] if nice else []
    popen = subprocess.Popen(
        [*niced, "taskset", "-c", str(core), *cmd],
        stdout=fh,
        stderr=subprocess.STDOUT,
        env={**os.environ, **env},
        cwd=REPO,
    )
    return Proc(name=name, popen=popen, log=log)


def _wait_for(proc: Proc, check: Any, what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(
                f"bench: {proc.name} exited with {proc.popen.returncode} before {what}; "
                f"see {proc.log}"
            )
        got = check()
        if got:
            return got
        time.sleep(0.2)
    raise RuntimeError(f"bench: {proc.name} did not {what} within {timeout:.0f} s; see {proc.log}")


def http_json(url: str, method: str = "GET", timeout: float = 5.0) -> Any:
    """GET/POST ``url`` and decode its JSON answer."""
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as resp:
            return resp.status == 200
    except OSError:
        return False


def _spawn_http(
    name: str, cmd: list[str], core: int, log_dir: Path, env: dict[str, str], port: int
) -> Proc:
    """``_spawn`` an HTTP server on ``port`` and wait until it answers ``/healthz``."""
    proc = _spawn(name, cmd, core, log_dir, env)
    proc.port = port
    _wait_for(proc, lambda: _http_ok(f"http://127.0.0.1:{port}/healthz"), "answer /healthz")
    return proc


def start_emulator(log_dir: Path, core: int, tone_secs: float) -> Proc:
    """The Live API emulator, speaking one long tone per turn at ``EMULATOR_PACE``."""
    cmd = [str(BIN / "voicebot"), "emulator", "--port", "0", "--voice", "tone"]
    cmd += ["--tone-secs", str(tone_secs), "--pace", str(EMULATOR_PACE)]
    cmd += ["--log-level", "WARNING"]
    proc = _spawn("emulator", cmd, core, log_dir, {})

    def ready() -> dict[str, Any] | None:
        for line in proc.log.read_text(errors="replace").splitlines():
            if line.startswith("{") and '"url"' in line:
                return dict(json.loads(line))
        return None

    proc.info = _wait_for(proc, ready, "print its URL")
    return proc


def start_baseline(script: Path, port: int, log_dir: Path, core: int, uvloop: bool) -> Proc:
    """``relay_baseline.py PORT`` (ours, ``sim/bench/relay_baseline.py``, unless told)."""
    if not script.is_file():
        raise RuntimeError(
            f"bench: relay baseline not found at {script}; pass --baseline PATH "
            "(default: the project's own sim/bench/relay_baseline.py)"
        )
    cmd = [sys.executable, str(script), str(port), *(["--uvloop"] if uvloop else [])]
    return _spawn_http("baseline", cmd, core, log_dir, {}, port)


def start_server(
    port: int,
    emulator: Proc,
    log_dir: Path,
    core: int,
    uvloop: bool,
    lag_guard_ms: float,
    stall_probe: bool = False,
    name: str = "server",
    profile: Path | None = None,
) -> Proc:
    """``voicebot serve`` pointed at the emulator.

    ``stall_probe`` times loop callbacks; ``profile`` runs the stage sampler
    (``VOICEBOT_PROFILE``, :mod:`bot.stage_profile`) writing its counts to that file. The
    operations listener (``/stats``) is on ``port + OPS_PORT_OFFSET``: ``info["ops_url"]``.
    """
    env = {
        "GEMINI_API_KEY": "bench",
        "GEMINI_BASE_URL": emulator.info["url"],
        "GEMINI_CA_FILE": emulator.info["ca_file"],
        "VOICEBOT_MAX_CALLS": "100000",
        "VOICEBOT_LAG_GUARD_MS": str(lag_guard_ms),
        "VOICEBOT_LOG_LEVEL": "WARNING",
        "VOICEBOT_STALL_PROBE": "1" if stall_probe else "0",
        "VOICEBOT_PROFILE": str(profile) if profile else "",
        "VOICEBOT_OPS_PORT": f"127.0.0.1:{port + OPS_PORT_OFFSET}",
        "VOICEBOT_OPS_TOKEN": "",
        # Records on, as in production, in the run's own folder (not the working directory).
        "VOICEBOT_DATABASE_URL": f"sqlite:///{(log_dir / f'{name}-calls.db').resolve()}",
    }
    cmd = [str(BIN / "voicebot"), "serve", "--port", str(port), *(["--uvloop"] if uvloop else [])]
    proc = _spawn_http(name, cmd, core, log_dir, env, port)
    proc.info["ops_url"] = f"http://127.0.0.1:{port + OPS_PORT_OFFSET}"
    if profile:
        proc.info["profile"] = str(profile)
    return proc


def start_loadtest(
    url: str,
    calls: int,
    ramp: float,
    scenario: Path,
    report: Path,
    core: int,
    log_dir: Path,
    name: str,
    nice: int = 0,
) -> Proc:
    """``voicebot loadtest`` with every call at once (after the ramp), in one process.

    ``nice``: the generator's niceness (``nice -n``); ``sim.bench.scale`` runs it at -5, ahead of
    a worker sharing its core (a negative value needs root; without it, a warning and 0).
    """
    cmd = [str(BIN / "voicebot"), "loadtest", "--url", url, "--calls", str(calls)]
    cmd += ["--concurrency", str(calls), "--ramp", str(ramp), "--scenario", str(scenario)]
    cmd += ["--report", str(report), "--seed", "1"]
    return _spawn(name, cmd, core, log_dir, {}, nice)
