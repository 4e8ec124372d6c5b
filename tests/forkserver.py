"""A fork server for the suite's xdist workers: the code is imported once, each worker is a fork.

Every xdist worker used to start as a fresh interpreter and import the same code (Pipecat,
google-genai, aiohttp, SQLAlchemy, our packages): ~1.5 CPU-s each, eight at once on two cores
at the start of every run. Here one process imports it once, then forks a worker for each
connection; the children share the imported pages copy-on-write.

Two roles, both run as scripts (stdlib only, so the launcher starts in milliseconds):

- ``python -u forkserver.py serve SOCKET MODULE[:FUNCTION]...``: listens on the Unix socket
  first (so the launchers' connections queue while it imports), imports the modules (and calls
  the functions named), freezes its heap (``gc.freeze``), then forks a child for
  each launcher. The child takes the launcher's standard streams (passed with ``SCM_RIGHTS``),
  working folder, environment and arguments, and runs them as ``python ARGS`` would; the server
  reaps it and sends its exit status back. It exits when its parent (pytest) does.
- ``python -S forkserver.py launch SOCKET ARGS...``: what execnet starts instead of
  ``python ARGS``; hands its streams to the server and exits with the child's status. With no
  server to talk to, or one that cannot fork safely (a thread running), it becomes
  ``python ARGS`` itself (``exec``), so a worker always starts.

Only ``python [-u] [-B] -c CODE [ARG...]`` is forked (what execnet's popen gateway runs).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import select
import signal
import socket
import struct
import sys
import threading
import types
from typing import Any

STATUS = struct.Struct("!i")
# Modules whose import starts native threads a fork does not take along (the child hangs at
# exit, joining them): with one of these loaded, the server forks nothing.
FORK_UNSAFE = ("onnxruntime",)
FORKSERVER_UNSAFE_NOTE = "loaded; workers start as plain interpreters"
FORKED, REFUSED = b"F", b"N"
MAX_REQUEST = 1 << 22


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


# ---------------------------------------------------------------------------- the launcher


def launch(path: str, argv: list[str]) -> None:
    """Run ``python ARGV`` as a fork of the server at ``path``, or as itself if it cannot."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(path)
            request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)})
            body = request.encode()
            socket.send_fds(sock, [struct.pack("!I", len(body)) + body], [0, 1, 2])
            if sock.recv(1) == FORKED:
                status = _recv_exact(sock, STATUS.size)
                # No status: the server went away (killed); the worker's channel says the rest.
                os._exit(STATUS.unpack(status)[0] if len(status) == STATUS.size else 1)
    except OSError:
        pass
    os.execv(sys.executable, [sys.executable, *argv])


# ---------------------------------------------------------------------------- the server


def _code_of(argv: list[str]) -> tuple[str, list[str]] | None:
    """``(code, sys.argv)`` for ``[-u] [-B] -c CODE [ARG...]``; None for anything else."""
    flags = []
    for i, arg in enumerate(argv):
        if arg == "-c" and i + 1 < len(argv):
            if set(flags) <= {"-u", "-B"}:
                return argv[i + 1], ["-c", *argv[i + 2 :]]
            return None
        flags.append(arg)
    return None


def _serve(path: str, modules: list[str]) -> dict[str, Any] | None:
    """Serve until the parent exits (returns None); in a forked child, return its request."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    for name in modules:  # launchers that connect meanwhile wait in the backlog
        module_name, _, function = name.partition(":")
        try:
            module = importlib.import_module(module_name)
            if function:  # work every worker would do again, done once (``MODULE:FUNCTION``)
                getattr(module, function)()
        except Exception as e:  # a worker that needs it imports it again and says what is wrong
            print(f"forkserver: {name} not preloaded: {e}", file=sys.stderr)
    unsafe = [name for name in FORK_UNSAFE if name in sys.modules]
    if unsafe:
        print(f"forkserver: {', '.join(unsafe)} {FORKSERVER_UNSAFE_NOTE}", file=sys.stderr)
    # The imported heap goes to the permanent generation before any fork: the children's
    # collections never walk it (each child's first full collection walked all of it, ~0.2 CPU-s,
    # eight children at once) nor write its objects' GC headers, which kept it shared.
    gc.collect()
    gc.freeze()
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno())
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for pytest; we follow it out
    parent = os.getppid()
    waiting: dict[int, socket.socket] = {}
    while os.getppid() == parent:
        ready, _, _ = select.select([listener, wake_r], [], [], 1.0)
        if wake_r in ready:
            while True:
                try:
                    if not wake_r.recv(512):
                        break
                except BlockingIOError:
                    break
        _reap(waiting)
        if listener not in ready:
            continue
        conn, _ = listener.accept()
        request = _receive(conn)
        code = _code_of(request["argv"]) if request else None
        if request is None or code is None or unsafe or threading.active_count() > 1:
            _close_fds(request)
            _answer(conn, REFUSED)
            conn.close()
            continue
        pid = os.fork()
        if pid == 0:
            signal.set_wakeup_fd(-1)
            for sock in (listener, wake_r, wake_w, conn, *waiting.values()):
                sock.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            request["code"], request["sys_argv"] = code
            return request
        _close_fds(request)
        _answer(conn, FORKED)  # a launcher that is gone still has its worker; none is lost
        waiting[pid] = conn
    return None


def _answer(conn: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):
        conn.sendall(data)


def _receive(conn: socket.socket) -> dict[str, Any] | None:
    try:
        head, fds, _, _ = socket.recv_fds(conn, 4096, 3)
    except OSError:
        return None
    if len(fds) != 3 or len(head) < 4:
        for fd in fds:
            os.close(fd)
        return None
    (size,) = struct.unpack("!I", head[:4])
    body = head[4:]
    if size > MAX_REQUEST:
        body = b""
    else:
        body += _recv_exact(conn, size - len(body))
    try:
        request: dict[str, Any] = json.loads(body)
    except ValueError:
        request = {"argv": []}
    request["fds"] = fds
    return request


def _close_fds(request: dict[str, Any] | None) -> None:
    for fd in (request or {}).get("fds", []):
        os.close(fd)


def _reap(waiting: dict[int, socket.socket]) -> None:
    while waiting:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = waiting.pop(pid, None)
        if conn is not None:
            _answer(conn, STATUS.pack(os.waitstatus_to_exitcode(status)))
            conn.close()


def _become(request: dict[str, Any]) -> int:
    """In the forked child: take the launcher's streams, folder and environment; run the code."""
    for target, fd in zip((0, 1, 2), request["fds"], strict=True):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = request["sys_argv"]
    sys.path[0] = ""  # as for `python -c`
    sys.dont_write_bytecode = "-B" in request["argv"] or bool(
        os.environ.get("PYTHONDONTWRITEBYTECODE")
    )
    main = types.ModuleType("__main__")
    sys.modules["__main__"] = main
    exec(compile(request["code"], "<string>", "exec"), main.__dict__)
    return 0


def main(argv: list[str]) -> int:
    """``serve SOCKET MODULE[:FUNCTION]...`` or ``launch SOCKET ARGS...``."""
    if len(argv) >= 2 and argv[0] == "launch":
        launch(argv[1], argv[2:])
    if len(argv) >= 2 and argv[0] == "serve":
        request = _serve(argv[1], argv[2:])
        if request is not None:
            return _become(request)  # the child's interpreter then exits the usual way
        return 0
    print(
        f"usage: {sys.argv[0]} serve SOCKET MODULE[:FUNCTION]... | launch SOCKET ARGS...",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
