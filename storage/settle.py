"""Settling messages after their recipients move: notices owed upstream, deletion when done.

Owns: the rule that a message has left the node when no recipient is pending or held (then
its upstream is owed a discard notice), and is finished, and deleted, when none is shadowed
either.
Public: settle(), record_notice().
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection

from storage.model import FINISHED_STATES, LEFT_STATES, Settled
from storage.schema import messages, notices, recipients, upstreams


def record_notice(
    conn: Connection, upstream: str, incarnation: str, queue_id: str, now: float
) -> int:
    """Owe `upstream` a discard notice for `queue_id`; 0 when that incarnation is gone."""
    row = conn.execute(
        select(upstreams.c.next_seq).where(
            upstreams.c.name == upstream, upstreams.c.incarnation == incarnation
        )
    ).first()
    if row is None:
        return 0
    conn.execute(
        insert(notices).values(
            upstream=upstream,
            upstream_incarnation=incarnation,
            seq=row.next_seq,
            queue_id=queue_id,
            created_at=now,
        )
    )
    conn.execute(
        update(upstreams)
        .where(upstreams.c.name == upstream, upstreams.c.incarnation == incarnation)
        .values(next_seq=upstreams.c.next_seq + 1)
    )
    return 1


def settle(conn: Connection, message_ids: Sequence[int], now: float) -> Settled:
    """Record upstream notices for messages that left, delete messages that are finished."""
    if not message_ids:
        return Settled()
    states: dict[int, set[str]] = {}
    for message, state in conn.execute(
        select(recipients.c.message, recipients.c.state).where(
            recipients.c.message.in_(message_ids)
        )
    ):
        states.setdefault(message, set()).add(state)
    left = [pk for pk, seen in states.items() if seen <= set(LEFT_STATES)]
    if not left:
        return Settled()
    rows = conn.execute(
        select(
            messages.c.id,
            messages.c.queue_id,
            messages.c.upstream,
            messages.c.upstream_incarnation,
            messages.c.upstream_notified,
        ).where(messages.c.id.in_(left))
    ).all()
    notified = 0
    for pk, queue_id, upstream, incarnation, done in rows:
        if upstream and not done:
            notified += record_notice(conn, upstream, incarnation, queue_id, now)
            conn.execute(update(messages).where(messages.c.id == pk).values(upstream_notified=1))
    finished = [(pk, queue_id) for pk, queue_id, *_ in rows if states[pk] <= set(FINISHED_STATES)]
    if finished:
        conn.execute(delete(messages).where(messages.c.id.in_([pk for pk, _ in finished])))
    return Settled(
        left=tuple(queue_id for _, queue_id, *_ in rows),
        finished=tuple(queue_id for _, queue_id in finished),
        notices=notified,
    )
