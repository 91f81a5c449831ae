"""Which delivery process claims a recipient: a stable function of its next hop.

Owns: shard_of(), and re-sharding a queue when the number of delivery processes changes.
Public: shard_of(), queue_shards(), reshard().
Limits: every recipient of one next hop is in one shard, so per-hop concurrency, hop-down
state and oldest-first order stay in one process.
See also: storage/claim.py (claims one shard), hubd/supervisor.py (how many shards).
"""

from __future__ import annotations

import sqlite3
import zlib


def shard_of(next_hop: str, shards: int) -> int:
    """The shard of a next hop among `shards` delivery processes (crc32, not hash(): stable)."""
    return zlib.crc32(next_hop.encode()) % shards if shards > 1 else 0


def queue_shards(db: sqlite3.Connection) -> int | None:
    """The shard count the queue's recipients are sharded for (None: never recorded)."""
    row = db.execute("SELECT value FROM meta WHERE key = 'shards'").fetchone()
    return None if row is None else int(row[0])


def reshard(db: sqlite3.Connection, shards: int) -> bool:
    """Recompute every recipient's shard if the queue was sharded for another count."""
    if queue_shards(db) == shards:
        return False
    hops = [hop for (hop,) in db.execute("SELECT DISTINCT next_hop FROM recipients")]
    db.executemany(
        "UPDATE recipients SET shard = ? WHERE next_hop = ?",
        [(shard_of(hop, shards), hop) for hop in hops],
    )
    db.execute(
        "INSERT INTO meta (key, value) VALUES ('shards', ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (str(shards),),
    )
    return True
