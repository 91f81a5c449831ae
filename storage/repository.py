"""The queue's verbs: enqueue, claim due recipients, record outcomes, look messages up.

Owns: every read and write of queue rows; the rule that a message row is deleted only when
none of its recipients is still pending.
Public: Repository, NewMessage, NewRecipient, ClaimedRecipient, RecipientOutcome,
RecipientState, QueuedMessage, QueuedRecipient.
Failures: storage errors propagate; callers answer SMTP clients with a transient reply.
Limits: one delivery process per database claims work (leases name the owning run and are
released at start-up; several delivery processes would need lease expiry instead).
See also: storage/writer.py (group commit), hubd/delivery/scheduler.py (the caller).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Select, delete, select, update
from sqlalchemy.engine import Connection

from storage.database import Database
from storage.model import (
    DONE_STATES,
    ClaimedRecipient,
    NewMessage,
    RecipientOutcome,
    RecipientState,
)
from storage.reader import DUE, QueueReader
from storage.schema import bodies, messages, recipients
from storage.writer import Writer


def _insert(conn: Connection, message: NewMessage) -> None:
    inserted = conn.execute(
        messages.insert().values(
            queue_id=message.queue_id,
            sender=message.sender,
            received_at=message.received_at,
            size=len(message.body),
            message_id=message.message_id,
            origin=message.origin,
            client=message.client,
            envid=message.envid,
            ret=message.ret,
        )
    ).inserted_primary_key
    assert inserted is not None
    pk = inserted[0]
    conn.execute(bodies.insert().values(message=pk, data=message.body))
    conn.execute(
        recipients.insert(),
        [
            {
                "message": pk,
                "address": r.address,
                "state": RecipientState.PENDING,
                "next_hop": r.next_hop,
                "next_attempt_at": message.received_at,
                "notify": r.notify,
                "orcpt": r.orcpt,
            }
            for r in message.recipients
        ],
    )


def due_query(now: float, limit: int) -> Select[tuple[int]]:
    """The scheduler's query for due work (kept public so a test can read its query plan)."""
    return (
        select(recipients.c.id)
        .where(DUE, recipients.c.next_attempt_at <= now)
        .order_by(recipients.c.next_attempt_at)
        .limit(limit)
    )


def _claim(conn: Connection, now: float, limit: int, owner: str) -> list[ClaimedRecipient]:
    ids = list(conn.execute(due_query(now, limit)).scalars())
    if not ids:
        return []
    conn.execute(update(recipients).where(recipients.c.id.in_(ids)).values(lease_owner=owner))
    rows = conn.execute(
        select(
            recipients.c.id.label("recipient_id"),
            recipients.c.address,
            recipients.c.attempts,
            messages.c.id.label("message"),
            messages.c.queue_id,
            messages.c.sender,
            messages.c.received_at,
            messages.c.size,
            messages.c.message_id,
            messages.c.envid,
            messages.c.ret,
            recipients.c.notify,
            recipients.c.orcpt,
            recipients.c.delay_notified,
        )
        .join(messages, messages.c.id == recipients.c.message)
        .where(recipients.c.id.in_(ids))
        .order_by(recipients.c.next_attempt_at, recipients.c.id)
    )
    return [
        ClaimedRecipient(**{**row._mapping, "delay_notified": bool(row.delay_notified)})
        for row in rows
    ]


def _record(
    conn: Connection, outcomes: Sequence[RecipientOutcome], notices: Sequence[NewMessage]
) -> list[str]:
    for notice in notices:
        _insert(conn, notice)
    for outcome in outcomes:
        values: dict[str, object] = {
            "state": outcome.state,
            "next_hop": outcome.next_hop,
            "last_error": outcome.reply,
            "attempts": recipients.c.attempts + 1,
            "lease_owner": None,
        }
        if outcome.delay_notified:
            values["delay_notified"] = 1
        if outcome.next_attempt_at is not None:
            values["next_attempt_at"] = outcome.next_attempt_at
        conn.execute(
            update(recipients).where(recipients.c.id == outcome.recipient_id).values(**values)
        )
    touched = select(recipients.c.message).where(
        recipients.c.id.in_([o.recipient_id for o in outcomes])
    )
    still_pending = select(recipients.c.message).where(
        recipients.c.message.in_(touched), recipients.c.state.not_in(DONE_STATES)
    )
    finished = select(messages.c.id, messages.c.queue_id).where(
        messages.c.id.in_(touched), messages.c.id.not_in(still_pending)
    )
    done = conn.execute(finished).all()
    if done:
        conn.execute(delete(messages).where(messages.c.id.in_([pk for pk, _ in done])))
    return [queue_id for _, queue_id in done]


def _release(conn: Connection, keep_owner: str | None) -> int:
    stmt = update(recipients).where(recipients.c.lease_owner.is_not(None))
    if keep_owner is not None:
        stmt = stmt.where(recipients.c.lease_owner != keep_owner)
    return conn.execute(stmt.values(lease_owner=None)).rowcount


@dataclass(frozen=True, slots=True)
class Recovery:
    """What start-up found of a run that died: freed recipients, and messages now held."""

    released: int
    poisoned: tuple[str, ...]


def _recover(conn: Connection, owner: str, poison_threshold: int) -> Recovery:
    orphaned = select(recipients.c.message).where(
        recipients.c.lease_owner.is_not(None), recipients.c.lease_owner != owner
    )
    # Every message a dead run was delivering counts one crash (Exchange's poison count).
    conn.execute(
        update(messages).where(messages.c.id.in_(orphaned)).values(crashes=messages.c.crashes + 1)
    )
    released = _release(conn, owner)
    poisoned = conn.execute(
        select(messages.c.id, messages.c.queue_id).where(
            messages.c.crashes >= poison_threshold,
            messages.c.id.in_(
                select(recipients.c.message).where(recipients.c.state == RecipientState.PENDING)
            ),
        )
    ).all()
    if poisoned:
        conn.execute(
            update(recipients)
            .where(
                recipients.c.message.in_([pk for pk, _ in poisoned]),
                recipients.c.state == RecipientState.PENDING,
            )
            .values(state=RecipientState.HELD, last_error="held: poison message")
        )
    return Recovery(released, tuple(queue_id for _, queue_id in poisoned))


def _set_state(
    conn: Connection,
    queue_id: str,
    from_states: Sequence[RecipientState],
    to: RecipientState,
    now: float | None,
) -> int:
    values: dict[str, object] = {"state": to}
    if now is not None:
        values["next_attempt_at"] = now
    if to is RecipientState.PENDING:
        conn.execute(update(messages).where(messages.c.queue_id == queue_id).values(crashes=0))
    target = select(messages.c.id).where(messages.c.queue_id == queue_id)
    return conn.execute(
        update(recipients)
        .where(recipients.c.message.in_(target), recipients.c.state.in_(list(from_states)))
        .values(**values)
    ).rowcount


def _remove(conn: Connection, queue_id: str) -> bool:
    return conn.execute(delete(messages).where(messages.c.queue_id == queue_id)).rowcount > 0


class Repository(QueueReader):
    """Domain verbs over one node's queue database: reads, and writes through the writer."""

    def __init__(self, database: Database, writer: Writer) -> None:
        super().__init__(database.read_engine)
        self.database = database
        self._writer = writer

    async def enqueue(self, message: NewMessage) -> None:
        """Commit a received message; return only once it is durable."""
        await self._writer.submit("enqueue", lambda conn: _insert(conn, message))

    async def claim_due(self, now: float, limit: int, owner: str) -> list[ClaimedRecipient]:
        """Lease up to `limit` due recipients to the delivery run `owner`."""
        return await self._writer.submit("claim", lambda conn: _claim(conn, now, limit, owner))

    async def record_outcomes(
        self, outcomes: Sequence[RecipientOutcome], notices: Sequence[NewMessage] = ()
    ) -> list[str]:
        """Record attempt results and queue their DSNs in one transaction.

        Returns the queue ids of messages that are finished, and so deleted.
        """
        return await self._writer.submit("outcome", lambda conn: _record(conn, outcomes, notices))

    async def release_leases(self, *, except_owner: str | None = None) -> int:
        """Free recipients leased by other (dead) runs, or by anyone when no owner is kept."""
        return await self._writer.submit("release", lambda conn: _release(conn, except_owner))

    async def recover(self, owner: str, poison_threshold: int) -> Recovery:
        """At start-up: count a crash for messages a dead run held, hold repeat offenders."""
        return await self._writer.submit(
            "recover", lambda conn: _recover(conn, owner, poison_threshold)
        )

    async def hold(self, queue_id: str) -> int:
        """Suspend a message's pending recipients; returns how many."""
        pending = (RecipientState.PENDING,)
        return await self._writer.submit(
            "hold", lambda conn: _set_state(conn, queue_id, pending, RecipientState.HELD, None)
        )

    async def release(self, queue_id: str, now: float) -> int:
        """Make a message's held or pending recipients due now (resume, or retry now)."""
        states = (RecipientState.HELD, RecipientState.PENDING)
        return await self._writer.submit(
            "release", lambda conn: _set_state(conn, queue_id, states, RecipientState.PENDING, now)
        )

    async def remove(self, queue_id: str) -> bool:
        """Delete a message outright (an operator's decision; no DSN)."""
        return await self._writer.submit("remove", lambda conn: _remove(conn, queue_id))
