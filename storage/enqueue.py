"""Putting received messages into the queue: one statement per table for a whole batch.

Owns: the rows of a new message (envelope, body, recipients), written inside the writer's
transaction with plain sqlite3 statements.
Public: insert_messages().
Limits: assigns message row ids itself (max + 1 ...), which is safe only inside the write
transaction (BEGIN IMMEDIATE: no other writer); SQLite would pick the same ids.
See also: storage/writer.py (the transaction), storage/repository.py (Repository.enqueue).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from storage.model import NewMessage, RecipientState
from storage.shards import shard_of

_MESSAGE = (
    "INSERT INTO messages (id, queue_id, sender, received_at, size, message_id, origin,"
    " client, envid, ret, upstream, upstream_incarnation) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
)
_BODY = "INSERT INTO bodies (message, data, spool) VALUES (?, ?, ?)"
_RECIPIENT = (
    "INSERT INTO recipients (message, address, state, next_hop, shard, next_attempt_at,"
    " notify, orcpt) VALUES (?,?,?,?,?,?,?,?)"
)


def insert_messages(db: sqlite3.Connection, batch: Sequence[NewMessage], shards: int) -> list[int]:
    """Insert messages with their bodies and recipients; returns their row ids."""
    (last,) = db.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()
    ids = list(range(last + 1, last + 1 + len(batch)))
    db.executemany(
        _MESSAGE,
        [
            (
                pk,
                m.queue_id,
                m.sender,
                m.received_at,
                m.size,
                m.message_id,
                m.origin,
                m.client,
                m.envid,
                m.ret,
                m.upstream,
                m.upstream_incarnation,
            )
            for pk, m in zip(ids, batch, strict=True)
        ],
    )
    db.executemany(
        _BODY,
        [
            (pk, m.body, m.spooled.name if m.spooled is not None else "")
            for pk, m in zip(ids, batch, strict=True)
        ],
    )
    db.executemany(
        _RECIPIENT,
        [
            (
                pk,
                r.address,
                RecipientState.PENDING.value,
                r.next_hop,
                shard_of(r.next_hop, shards),
                m.received_at,
                r.notify,
                r.orcpt,
            )
            for pk, m in zip(ids, batch, strict=True)
            for r in m.recipients
        ],
    )
    return ids
