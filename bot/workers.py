"""``voicebot serve --workers N``: one server process per core, under Gunicorn.

One process serves its calls on one event loop, so one process uses one core. Several
processes on one machine go through an existing process manager, not a home-made one: Gunicorn's
arbiter (the master) forks N workers that each bind the public port with ``SO_REUSEPORT`` (the
kernel spreads new connections evenly over them; ``reuse_port``); it
restarts a worker that dies or stops answering its heartbeat, and on SIGTERM it sends SIGTERM
to every worker and waits ``graceful_timeout`` for them to exit before it kills what is left.

Each worker is ``VoicebotWorker``, a subclass of aiohttp's ``GunicornWebWorker`` that runs the
whole single-process server (``bot.server.serve``: personas, Gemini clients, ops listener,
signals and drain) on the inherited sockets (``ServeOptions.sockets``), plus, through
``ServeOptions.extras``:

* **its own peer listener**, the same application on ``<peer host>:<peer port + index>``, and
  its ``Settings.peer_url`` set to it, so a stream that lands on another worker (or pod) is
  forwarded to the worker that admitted its call (``bot.stream_forward``). The base is
  ``VOICEBOT_PEER_URL`` (in Kubernetes the pod IP, from the downward API), else
  ``http://127.0.0.1:<port + 1>``;
* **its own operations listener** on ``127.0.0.1:<ops port + 1 + index>``, and on worker 0
  also **the aggregate** on the ops port itself (``bot.metrics_workers``): ``/metrics`` is
  every worker's registry with a ``worker`` label, ``/stats`` every worker's figures.

A worker's index (0 … N-1) is given in the master before the fork (``assign_index``, the
``pre_fork`` hook): the lowest index no live worker holds, so a restarted worker takes the
ports of the one it replaces.

Drain: the master's SIGTERM reaches every worker, each runs the single-process drain (stops
admitting, keeps listening so streams whose TwiML it served still arrive, lets its calls end,
then wraps up the rest with a goodbye) and exits; ``graceful_timeout`` covers the drain window
and the wrap-up, and the master exits 0 when the last worker has. The master's quick stop
(SIGINT, SIGQUIT: it sends workers SIGQUIT) is taken as SIGTERM: a drain, never a cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.worker import GunicornWebWorker
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from bot.listen_address import ListenAddress

if TYPE_CHECKING:
    from bot.server import GeminiSource, ServeOptions
    from bot.settings import Settings

# Gunicorn's grace on top of the drain window and the wrap-up (bot.calls.WRAP_UP_SECS).
GRACE_MARGIN_SECS = 15.0
HEARTBEAT_SECS = 1.0
# The master kills a worker whose heartbeat stops this long (a frozen event loop).
WORKER_TIMEOUT_SECS = 30


class WorkersError(ValueError):
    """The ``--workers`` options cannot work together (a clear message for the command)."""


@dataclass(frozen=True)
class WorkerPlan:
    """What every worker serves; made in the master, inherited through the fork.

    Attributes:
        workers: How many worker processes.
        settings: The process settings (each worker gets its own copy with its ports).
        options: The ``voicebot serve`` options (host, port, drain window).
        force_emulator: ``--emulator`` was given.
        exposed: Why the server is reachable from outside, if it is (production mode).
        peer: The peer listener of worker 0; worker ``i`` listens on ``peer.port + i``.
        ops: The aggregate operations listener (worker 0); worker ``i``'s own is on
            ``127.0.0.1:ops.port + 1 + i``. None: ``VOICEBOT_OPS_PORT=off``.
        uvloop: Run each worker on uvloop.
    """

    workers: int
    settings: Settings
    options: ServeOptions
    force_emulator: bool
    exposed: str | None
    peer: ListenAddress
    ops: ListenAddress | None
    uvloop: bool = False

    @property
    def graceful_timeout(self) -> float:
        """Gunicorn's ``graceful_timeout``: the drain window, the wrap-up and a margin."""
        from bot.calls import WRAP_UP_SECS

        drain = self.options.drain_secs * self.settings.time_scale
        return drain + WRAP_UP_SECS + GRACE_MARGIN_SECS

    def peer_address(self, index: int) -> ListenAddress:
        """Where worker ``index`` listens for streams forwarded by its peers."""
        return ListenAddress(self.peer.host, self.peer.port + index)

    def peer_url(self, index: int) -> str:
        """Worker ``index``'s peer URL (what the signed call token names)."""
        return self.peer_address(index).url()

    def ops_address(self, index: int) -> ListenAddress | None:
        """Worker ``index``'s own operations listener: on loopback (the aggregate is public)."""
        return None if self.ops is None else ListenAddress("127.0.0.1", self.ops.port + 1 + index)

    def worker_settings(self, index: int) -> Settings:
        """Worker ``index``'s settings: its own ops port and peer URL.

        A webhook a full worker cannot take is passed on (``<Redirect>``) up to N - 1 times
        unless ``VOICEBOT_BUSY_REDIRECTS`` says otherwise: the retry's new connection may land
        on another worker (``SO_REUSEPORT``).
        """
        update: dict[str, Any] = {"peer_url": self.peer_url(index)}
        if self.settings.busy_redirects is None:
            update["busy_redirects"] = self.workers - 1
        ops = self.ops_address(index)
        if ops is not None:
            update["ops_listen"] = f"{ops.host}:{ops.port}"
        return self.settings.model_copy(update=update)


def make_plan(
    workers: int,
    settings: Settings,
    options: ServeOptions,
    force_emulator: bool,
    exposed: str | None,
    uvloop: bool = False,
) -> WorkerPlan:
    """The plan for ``--workers N``, checked.

    Raises:
        WorkersError: fewer than 1 worker; an ops port of 0 (each worker's port is derived
            from it, so it must be fixed) or beyond loopback without a token; a peer URL on
            the public port.
    """
    from bot.listen_address import OpsExposureError, check_ops_exposure

    if workers < 1:
        raise WorkersError(f"--workers: got {workers}, expected 1 or more (one per core)")
    try:
        check_ops_exposure(settings)  # the aggregate listens where the settings say
    except OpsExposureError as e:
        raise WorkersError(str(e)) from None
    ops = settings.ops_address
    if ops is not None and ops.port == 0:
        raise WorkersError(
            "--workers needs a fixed operations port (each worker's is derived from it: "
            f"port + 1 + index), got {settings.ops_listen!r}; pass e.g. --ops-port 9464, or off"
        )
    base = settings.peer_url
    if base:
        parts = urlsplit(base)
        peer = ListenAddress(parts.hostname or "127.0.0.1", parts.port or options.port + 1)
    else:
        peer = ListenAddress("127.0.0.1", options.port + 1)
    if peer.port <= options.port < peer.port + workers:
        raise WorkersError(
            f"VOICEBOT_PEER_URL {base!r}: worker peer ports {peer.port}-{peer.port + workers - 1} "
            f"include the public port {options.port}, which the workers share; give the port of "
            f"worker 0's own listener, e.g. http://{peer.host}:{options.port + 1}"
        )
    return WorkerPlan(workers, settings, options, force_emulator, exposed, peer, ops, uvloop)


def assign_index(arbiter: Any, worker: Any) -> None:
    """Gunicorn ``pre_fork`` hook: the lowest index no live worker holds."""
    taken = {getattr(w, "index", None) for w in arbiter.WORKERS.values()}
    worker.index = next(i for i in range(len(taken) + 1) if i not in taken)


class VoicebotApplication(BaseApplication):  # type: ignore[misc]
    """Gunicorn's arbiter configured for the plan (no config file, no command line)."""

    def __init__(self, plan: WorkerPlan) -> None:
        self.plan = plan
        super().__init__(prog="voicebot serve")

    def load_config(self) -> None:
        """Gunicorn's settings from the plan."""
        plan, options = self.plan, self.plan.options
        host = f"[{options.host}]" if ":" in options.host else options.host
        for key, value in {
            "bind": [f"{host}:{options.port}"],
            "workers": plan.workers,
            "worker_class": VoicebotWorker,
            "graceful_timeout": math.ceil(plan.graceful_timeout),
            "timeout": WORKER_TIMEOUT_SECS,
            "backlog": 1024,
            # Each worker binds the port itself (SO_REUSEPORT) and the kernel spreads new
            # connections evenly over them; one shared socket lets whichever worker wakes first
            # take them, which can leave one worker with most of the calls.
            "reuse_port": True,
            "pre_fork": assign_index,
            "proc_name": "voicebot",
            "accesslog": None,
            "errorlog": "-",
            "loglevel": "info",
            # No control socket: its default path ($HOME/.gunicorn) is shared by every
            # instance on the machine.
            "control_socket_disable": True,
        }.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        """Unused: each worker builds its own application (``VoicebotWorker.run``)."""
        return self.plan


class VoicebotWorker(GunicornWebWorker):  # type: ignore[misc]
    """One server process under Gunicorn: ``bot.server.serve`` on the shared sockets."""

    index = 0
    _stop_early = False
    _serving = False

    def init_process(self) -> None:
        """Install uvloop when asked, before the worker's loop is made."""
        if self.app.plan.uvloop:
            with contextlib.suppress(ImportError):
                import uvloop

                asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        super().init_process()

    def init_signals(self) -> None:
        """SIGTERM/SIGINT: ``bot.server``'s drain (installed when serving starts); SIGQUIT too."""
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            self.loop.add_signal_handler(sig, self._stop_signal)
        self.loop.add_signal_handler(signal.SIGUSR1, self.handle_usr1, signal.SIGUSR1, None)
        self.loop.add_signal_handler(signal.SIGABRT, self.handle_abort, signal.SIGABRT, None)
        signal.siginterrupt(signal.SIGTERM, False)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)

    def _stop_signal(self) -> None:
        # Before serving: remembered and replayed once bot.server listens for it. While
        # serving (only SIGQUIT still comes here): the same as SIGTERM.
        self.alive = False
        if self._serving:
            os.kill(os.getpid(), signal.SIGTERM)
        else:
            self._stop_early = True

    def run(self) -> None:
        """Serve until the drain ends; exit 3 (Gunicorn: failed to boot) on a start error."""
        self.booted = False  # a failure before serving stops the master instead of a respawn
        heartbeat = self.loop.create_task(self._heartbeat(), name="gunicorn:heartbeat")
        try:
            status = self.loop.run_until_complete(self._serve())
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                self.loop.run_until_complete(heartbeat)
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()
        sys.exit(Arbiter.WORKER_BOOT_ERROR if status and not self.booted else status)

    async def _serve(self) -> int:
        import dataclasses

        from bot.serve_cmd import gemini_source
        from bot.server import serve

        plan: WorkerPlan = self.app.plan
        settings = plan.worker_settings(self.index)
        source: GeminiSource | None = gemini_source(settings, plan.force_emulator, plan.exposed)
        options = dataclasses.replace(
            plan.options, sockets=tuple(self.sockets), extras=self._extras
        )
        return await serve(settings, options, source)

    async def _heartbeat(self) -> None:
        # The master's liveness check (a frozen loop stops it); a master gone: drain and exit.
        while True:
            self.notify()
            if os.getppid() != self.ppid and self._serving:
                os.kill(os.getpid(), signal.SIGTERM)
                return
            await asyncio.sleep(HEARTBEAT_SECS)

    @contextlib.asynccontextmanager
    async def _extras(self, app: web.Application, runner: web.AppRunner) -> AsyncIterator[None]:
        from bot.metrics_workers import AggregateOps

        plan: WorkerPlan = self.app.plan
        peer = plan.peer_address(self.index)
        await web.TCPSite(runner, peer.host, peer.port, backlog=1024).start()
        aggregate = None
        if self.index == 0 and plan.ops is not None:
            ops_of = [plan.ops_address(i) for i in range(plan.workers)]
            aggregate = AggregateOps(app, plan.settings, plan.ops, [a for a in ops_of if a])
            await aggregate.start()
        self.booted = True
        self._serving = True
        if self._stop_early:  # replayed once bot.server's handler is in place (next tick)
            asyncio.get_running_loop().call_soon(os.kill, os.getpid(), signal.SIGTERM)
        from loguru import logger

        logger.info(
            f"worker {self.index} (pid {os.getpid()}): peer listener {peer.url()}"
            + (f"; aggregate operations on {aggregate.url}" if aggregate else "")
        )
        try:
            yield
        finally:
            if aggregate is not None:
                await aggregate.stop()


def run_workers(plan: WorkerPlan) -> int:
    """Run Gunicorn's master with the plan's workers until it stops.

    Returns:
        0 after a drain; 1 when it stopped on an error (a worker that failed to start halts
        the master: Gunicorn's status 3, whose cause the worker printed).
    """
    master = os.getpid()
    try:
        VoicebotApplication(plan).run()
    except SystemExit as e:
        if os.getpid() != master:  # a worker's own exit, unwinding through the fork: keep it
            raise
        return 0 if e.code in (0, None) else 1
    return 0
