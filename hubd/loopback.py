"""Choosing a loopback address of one's own: a random 127.x.y.z and a port free on it.

Owns: free_loopback_address(), used by tests, the benchmark and anything else that runs
servers side by side on one host without them colliding.
Public: free_loopback_address().
Failures: OSError when no address can be bound after 100 tries.
Limits: the port was free when probed; another process may take it before it is used.
See also: hubd/cluster/layout.py (a whole /24 block for a cluster).
"""

from __future__ import annotations

import random
import socket


def free_loopback_address(rng: random.Random | None = None) -> tuple[str, int]:
    """A 127.0.0.x address of its own and a port that was free on it a moment ago."""
    chooser = rng or random.Random()
    for _ in range(100):
        host = f"127.0.{chooser.randint(1, 250)}.{chooser.randint(2, 254)}"
        with socket.socket() as probe:
            try:
                probe.bind((host, 0))
            except OSError:
                continue
            return host, probe.getsockname()[1]
    raise OSError("no free loopback address found")
