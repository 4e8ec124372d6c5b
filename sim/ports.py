"""Loopback ports for servers whose address must be known before they start.

A port found by binding port 0 comes from the kernel's ephemeral range and is free only until
the next outgoing connection or bind to port 0 anywhere on the machine takes it. With several
test processes opening connections and starting servers at once, a server given such a port
sometimes failed with "address already in use" (the scale-out test, in a 6-worker run).

So ports come from below the ephemeral range, which the kernel never hands out by itself, and
each process draws from its own slice of it: ``VOICEBOT_PORT_SLOT`` if set, else the number of
the pytest-xdist worker (``gw3``: slice 3), else one picked from the process id. Each port is
checked free by binding it before it is returned, and a process never returns one twice until
its slice wraps round. Where the ephemeral range starts too low to leave room (an unusual
``ip_local_port_range``), ports come from port 0 as before.
"""

from __future__ import annotations

import itertools
import os
import socket
from collections.abc import Iterator
from pathlib import Path

# The reserved ports are RESERVED_FROM up to the start of the ephemeral range, cut in SLOTS.
RESERVED_FROM = 20000
SLOTS = 16
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_cursor: Iterator[int] | None = None
_slice_end = 0


def _ephemeral_start() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _slot() -> int:
    for name in ("VOICEBOT_PORT_SLOT", "PYTEST_XDIST_WORKER"):
        digits = "".join(c for c in os.environ.get(name, "") if c.isdigit())
        if digits:
            return int(digits) % SLOTS
    return os.getpid() % SLOTS


def _candidates() -> Iterator[int] | None:
    global _cursor, _slice_end
    if _cursor is None:
        width = (_ephemeral_start() - RESERVED_FROM) // SLOTS
        if width < 64:
            return None
        first = RESERVED_FROM + _slot() * width
        _slice_end = first + width
        # Start at a point picked from the pid, so a rerun does not meet its own TIME_WAITs.
        start = os.getpid() % width
        _cursor = itertools.cycle([first + (start + i) % width for i in range(width)])
    return _cursor


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_block(count: int = 1) -> int:
    """The first of ``count`` consecutive loopback ports that are all free now."""
    candidates = _candidates()
    if candidates is None:
        while True:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                base = int(s.getsockname()[1])
            if base + count <= 65536 and all(_bindable(base + k) for k in range(count)):
                return base
    for _ in range(4096):
        base = next(candidates)
        if base + count <= _slice_end and all(_bindable(base + k) for k in range(count)):
            for _ in range(count - 1):  # the block is taken: step past it
                next(candidates)
            return base
    raise OSError(f"no {count} free consecutive loopback ports in this process's slice")


def free_port() -> int:
    """A loopback TCP port free right now (for a server whose URL must be known in advance)."""
    return free_port_block(1)
