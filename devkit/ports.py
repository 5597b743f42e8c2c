"""TCP ports on loopback: whether one is free, a stable fallback for the local stack, any free one for a test."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Sequence
from pathlib import Path

from devkit.errors import StackError


def port_free(port: int) -> bool:
    """Whether 127.0.0.1:port can be listened on (SO_REUSEADDR like Java and PostgreSQL, so TIME_WAIT is free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def fallback_range() -> range:
    # Outside the ephemeral range: a stopped Kafka's port must not be taken by some client's
    # outgoing connection before a fault test starts it again.
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(20000, low) if low > 21000 else range(high + 1, 65536)


def pick_port(preferred: int | None, seed: str, taken: Sequence[int] = ()) -> int:
    """`preferred` if free, else a free port outside the ephemeral range, the same one for the same seed."""
    if preferred and preferred not in taken and port_free(preferred):
        return preferred
    candidates = fallback_range()
    start = int(hashlib.sha1(seed.encode()).hexdigest(), 16) % len(candidates)
    for i in range(len(candidates)):
        port = candidates[(start + i) % len(candidates)]
        if port not in taken and port_free(port):
            return port
    raise StackError("no free TCP port on 127.0.0.1")


def free_port() -> int:
    """A TCP port free on loopback right now (the OS picks it): for a test's API or receiver."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
