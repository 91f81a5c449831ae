"""What a node's processes are for: the jobs one process of a node does.

Owns: Role (accepting, a delivery shard, the peers' upkeep, owning the queue's lifecycle)
and ALL, the role of a node that is one process.
Public: Role, ALL.
See also: hubd/node.py (builds a process for its role), hubd/supervisor.py (hands them out).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Role:
    """Which of the node's jobs a process does."""

    accept: bool = True  # listeners, intake, the XSHADOW verbs
    shard: int | None = 0  # the delivery shard it claims, or None: no delivery
    shards: int = 1  # how many delivery shards the node has
    peers: bool = True  # heartbeats, resubmission, shadow expiry (one process per node)
    owns_queue: bool = True  # prepares the file and recovers leases at start (one process)
    acceptors: int = 1  # how many acceptor processes share the in-flight thresholds


ALL = Role()
