"""One child process of a node: an acceptor or a delivery process, started by the supervisor.

Owns: turning what the supervisor passed (a JSON spec on stdin, descriptors by number)
into a running Node for that role: the inherited listening sockets and pipes, dying with
the supervisor (PR_SET_PDEATHSIG), telling it when ready.
Public: main() (`python -m hubd.worker NAME`; not a user command).
Failures: exits 1 (logged) when it cannot start; the supervisor then stops the node.
See also: hubd/supervisor.py, hubd/node.py, hubd/signals.py.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from hubd.config import load_config
from hubd.logs import LogFormat, configure
from hubd.node import Node
from hubd.roles import Role
from hubd.signals import PipeEnds, PipeSignals, read_departures, read_pressure, read_wakeups
from hubd.smtp.shared_counters import SharedCounters

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when the supervisor dies, even by SIGKILL (no orphans)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # it died before the prctl took effect
        os._exit(1)


async def _serve(spec: dict[str, Any]) -> None:
    config = load_config(Path(spec["config_path"]))
    fds = spec["fds"]
    ends = PipeEnds(
        wake=tuple(fds["wake"]),
        departures=tuple(fds["departures"]),
        wake_read=fds.get("wake_read"),
        departures_read=fds.get("departures_read"),
    )
    signals = PipeSignals(ends)
    await signals.open()
    shared = spec.get("counters")
    counters = (
        SharedCounters(
            fds["counters"], shared["region"], shared["regions"], bytes.fromhex(shared["key"])
        )
        if shared is not None
        else None
    )

    def inherited(kind: str) -> list[socket.socket]:
        return [socket.socket(fileno=fd) for fd in fds.get(kind, [])]

    node = Node(
        config,
        role=Role(**spec["role"]),
        sockets=inherited("listen"),
        submission_sockets=inherited("submission"),
        tls_sockets=inherited("submission_tls"),
        signals=signals,
        owner=spec["owner"],
        counters=counters,
    )
    stops = []

    if fds.get("pressure_read") is not None:
        stops.append(read_pressure(fds["pressure_read"], node.publish_pressure))

    def ready(started: Node) -> None:
        if ends.wake_read is not None:
            stops.append(read_wakeups(ends.wake_read, started.wake, started.flush))
        if ends.departures_read is not None:
            stops.append(read_departures(ends.departures_read, started.departed))
        os.write(fds["ready"], b"ready\n")

    try:
        await node.run_until_signalled(ready)
    finally:
        for stop in stops:
            stop()
        signals.close()


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "worker"
    spec = json.loads(sys.stdin.read())
    configure(int(spec["log_level"]), name, LogFormat(spec.get("log_format", "text")))
    _die_with_parent(int(spec["parent"]))
    try:
        asyncio.run(_serve(spec))
    except Exception:
        log.exception("%s stopped", name)
        sys.exit(1)


if __name__ == "__main__":
    main()
