"""A quick, synchronous look at a queue database from outside the node that owns it.

Owns: the counts `hubd cluster status` shows: recipients waiting per next hop, shadows held,
discard notices owed. Read-only (the node keeps running; WAL lets readers in).
Public: QueueSummary, summarise_queue(), read_counters().
Failures: a missing or unreadable file gives an empty summary, never an exception.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class QueueSummary:
    waiting: dict[str, int] = field(default_factory=dict)  # next hop -> pending or held
    shadows: int = 0
    owed: int = 0

    @property
    def queued(self) -> int:
        return sum(self.waiting.values())


def summarise_queue(path: Path) -> QueueSummary:
    """Counts from the queue database at `path` (empty when there is none yet)."""
    if not path.exists():
        return QueueSummary()
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
    except sqlite3.Error:
        return QueueSummary()
    try:
        waiting = dict(
            conn.execute(
                "SELECT next_hop, count(*) FROM recipients"
                " WHERE state IN ('PENDING', 'HELD') GROUP BY next_hop"
            ).fetchall()
        )
        shadows = conn.execute("SELECT count(*) FROM shadows").fetchone()[0]
        owed = conn.execute("SELECT count(*) FROM notices").fetchone()[0]
    except sqlite3.Error:
        return QueueSummary()
    finally:
        conn.close()
    return QueueSummary(waiting, int(shadows), int(owed))


def read_counters(path: Path) -> dict[str, int]:
    """The durable counters of a queue database (commits:<kind>, ops:<kind>)."""
    if not path.exists():
        return {}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
    try:
        return {name: int(value) for name, value in conn.execute("SELECT name, value FROM stats")}
    finally:
        conn.close()
