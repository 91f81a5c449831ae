"""Settling messages after their recipients move: notices owed upstream, deletion when done.

Owns: the rule that a message has left the node when no recipient is pending or held (then
its upstream is owed a discard notice), and is finished, and deleted, when none is shadowed
either.
Public: settle(), owe_notices().
Limits: plain sqlite3 statements inside the caller's write transaction; a whole batch of
messages takes a fixed handful of statements (notices: a few per upstream).
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Collection

from storage.model import FINISHED_STATES, LEFT_STATES, Settled
from storage.sql import IN_IDS as _IN
from storage.sql import ids_param

_STATES = f"SELECT message, state FROM recipients WHERE message {_IN}"
_LEFT = (
    "SELECT id, queue_id, upstream, upstream_incarnation, upstream_notified"
    f" FROM messages WHERE id {_IN}"
)
_NEXT_SEQ = "SELECT next_seq FROM upstreams WHERE name = ? AND incarnation = ?"
_NOTICE = (
    "INSERT INTO notices (upstream, upstream_incarnation, seq, queue_id, created_at)"
    " VALUES (?, ?, ?, ?, ?)"
)
_BUMP_SEQ = "UPDATE upstreams SET next_seq = ? WHERE name = ? AND incarnation = ?"
_NOTIFIED = f"UPDATE messages SET upstream_notified = 1 WHERE id {_IN}"
_DELETE = f"DELETE FROM messages WHERE id {_IN}"

_LEFT_SET = frozenset(LEFT_STATES)
_FINISHED_SET = frozenset(FINISHED_STATES)


def owe_notices(
    db: sqlite3.Connection, owed: dict[tuple[str, str], list[str]], now: float
) -> set[str]:
    """Record notices owed to each upstream incarnation; returns the queue ids recorded."""
    recorded: set[str] = set()
    for (upstream, incarnation), queue_ids in owed.items():
        row = db.execute(_NEXT_SEQ, (upstream, incarnation)).fetchone()
        if row is None:  # that incarnation is gone: nobody is owed anything
            continue
        first = int(row[0])
        db.executemany(
            _NOTICE,
            [
                (upstream, incarnation, first + i, queue_id, now)
                for i, queue_id in enumerate(queue_ids)
            ],
        )
        db.execute(_BUMP_SEQ, (first + len(queue_ids), upstream, incarnation))
        recorded.update(queue_ids)
    return recorded


def settle(db: sqlite3.Connection, message_ids: Collection[int], now: float) -> Settled:
    """Record upstream notices for messages that left, delete messages that are finished."""
    if not message_ids:
        return Settled()
    states: dict[int, set[str]] = defaultdict(set)
    for message, state in db.execute(_STATES, (ids_param(message_ids),)):
        states[message].add(state)
    left = [pk for pk, seen in states.items() if seen <= _LEFT_SET]
    if not left:
        return Settled()
    rows = db.execute(_LEFT, (ids_param(left),)).fetchall()
    owed: dict[tuple[str, str], list[str]] = defaultdict(list)
    notified = []
    for pk, queue_id, upstream, incarnation, done in rows:
        if upstream and not done:
            owed[(upstream, incarnation)].append(queue_id)
            notified.append(pk)
    recorded: set[str] = set()
    if notified:
        recorded = owe_notices(db, owed, now)
        db.execute(_NOTIFIED, (ids_param(notified),))
    finished = [(pk, queue_id) for pk, queue_id, *_ in rows if states[pk] <= _FINISHED_SET]
    if finished:
        db.execute(_DELETE, (ids_param([pk for pk, _ in finished]),))
    return Settled(
        left=tuple(queue_id for _, queue_id, *_ in rows),
        finished=tuple(queue_id for _, queue_id in finished),
        notices=len(recorded),
    )
