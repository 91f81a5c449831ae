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
from dataclasses import dataclass, replace

from sqlalchemy import Select, delete, select, update
from sqlalchemy.engine import Connection

from storage.database import Database
from storage.model import (
    ClaimedRecipient,
    NewMessage,
    RecipientOutcome,
    RecipientState,
    Settled,
    ShadowRecord,
)
from storage.reader import DUE, QueueReader
from storage.schema import bodies, messages, recipients
from storage.settle import settle
from storage.shadows import claim_early_discard, create_shadow, remember_origin
from storage.writer import Writer


def _message_row(message: NewMessage) -> dict[str, object]:
    return {
        "queue_id": message.queue_id,
        "sender": message.sender,
        "received_at": message.received_at,
        "size": len(message.body),
        "message_id": message.message_id,
        "origin": message.origin,
        "client": message.client,
        "envid": message.envid,
        "ret": message.ret,
        "upstream": message.upstream,
        "upstream_incarnation": message.upstream_incarnation,
    }


def _recipient_rows(pk: int, message: NewMessage) -> list[dict[str, object]]:
    return [
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
    ]


def _insert(conn: Connection, message: NewMessage) -> None:
    _insert_many(conn, [message])


def _insert_many(conn: Connection, batch: list[NewMessage]) -> None:
    """Insert messages, bodies and recipients with one statement per table."""
    returned = conn.execute(
        messages.insert().returning(messages.c.id, sort_by_parameter_order=True),
        [_message_row(message) for message in batch],
    ).scalars()
    pks = list(returned)
    conn.execute(
        bodies.insert(),
        [{"message": pk, "data": message.body} for pk, message in zip(pks, batch, strict=True)],
    )
    conn.execute(
        recipients.insert(),
        [row for pk, m in zip(pks, batch, strict=True) for row in _recipient_rows(pk, m)],
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
            messages.c.origin,
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
    conn: Connection,
    outcomes: Sequence[RecipientOutcome],
    dsns: Sequence[NewMessage],
    now: float,
) -> Settled:
    for dsn in dsns:
        _insert(conn, dsn)
    shadow_ids: dict[ShadowRecord, int] = {}
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
        if outcome.shadow is not None:
            if outcome.shadow not in shadow_ids:
                shadow_ids[outcome.shadow] = create_shadow(
                    conn, outcome.recipient_id, outcome.shadow, now
                )
            values["shadow"] = shadow_ids[outcome.shadow]
        conn.execute(
            update(recipients).where(recipients.c.id == outcome.recipient_id).values(**values)
        )
        if outcome.final:
            remember_origin(conn, outcome.recipient_id, now)
    discarded = tuple(
        record
        for record, shadow_id in shadow_ids.items()
        if claim_early_discard(conn, record, shadow_id)
    )
    touched = conn.execute(
        select(recipients.c.message)
        .where(recipients.c.id.in_([o.recipient_id for o in outcomes]))
        .distinct()
    ).scalars()
    return replace(settle(conn, list(touched), now), discarded=discarded)


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
        await self._writer.submit(
            "enqueue", lambda conn: _insert(conn, message), bulk=_insert_many, payload=message
        )

    async def claim_due(self, now: float, limit: int, owner: str) -> list[ClaimedRecipient]:
        """Lease up to `limit` due recipients to the delivery run `owner`."""
        return await self._writer.submit("claim", lambda conn: _claim(conn, now, limit, owner))

    async def record_outcomes(
        self,
        outcomes: Sequence[RecipientOutcome],
        dsns: Sequence[NewMessage] = (),
        now: float = 0.0,
    ) -> Settled:
        """Record attempt results, shadows and their DSNs in one transaction."""
        return await self._writer.submit("outcome", lambda conn: _record(conn, outcomes, dsns, now))

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
