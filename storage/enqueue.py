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
    " notify, orcpt, shadow) VALUES (?,?,?,?,?,?,?,?,?)"
)
_HELD_SHADOW = (
    "INSERT INTO shadows (message, peer_address, peer_name, peer_incarnation, peer_queue_id,"
    " created_at) VALUES (?, ?, ?, ?, ?, ?)"
)
# A primary arrived here for an origin key this node holds a redundancy copy of: the copy
# is no longer needed (this node now owes its own upstream the message).
_DROP_HELD_COPY = (
    "DELETE FROM messages WHERE origin = ? AND id IN"
    " (SELECT message FROM shadows WHERE peer_incarnation = ? AND peer_queue_id = ?)"
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
    shadow_ids = {
        pk: _held_shadow(db, pk, m) for pk, m in zip(ids, batch, strict=True) if m.held_for
    }
    db.executemany(
        _RECIPIENT,
        [
            (
                pk,
                r.address,
                (RecipientState.SHADOWED if pk in shadow_ids else RecipientState.PENDING).value,
                r.next_hop,
                shard_of(r.next_hop, shards),
                m.not_before if m.not_before is not None else m.received_at,
                r.notify,
                r.orcpt,
                shadow_ids.get(pk),
            )
            for pk, m in zip(ids, batch, strict=True)
            for r in m.recipients
        ],
    )
    for m in batch:
        if m.upstream and m.held_for is None:
            _drop_held_copy(db, m.origin)
    return ids


def _held_shadow(db: sqlite3.Connection, pk: int, message: NewMessage) -> int:
    held = message.held_for
    assert held is not None
    cursor = db.execute(
        _HELD_SHADOW,
        (
            pk,
            held.peer_address,
            held.peer_name,
            held.peer_incarnation,
            held.peer_queue_id,
            message.received_at,
        ),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def _drop_held_copy(db: sqlite3.Connection, origin: str) -> None:
    parts = origin.split(".")
    if len(parts) == 3:  # name.incarnation.queue-id (checked by the session)
        db.execute(_DROP_HELD_COPY, (origin, parts[1], parts[2]))
