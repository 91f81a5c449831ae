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

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.engine import Connection

from storage.database import Database
from storage.schema import bodies, messages, recipients, stats
from storage.writer import Writer


class RecipientState(enum.StrEnum):
    """Where one recipient of a queued message stands."""

    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"
    HELD = "HELD"  # not tried until an operator releases it (poison, or suspended)


DONE_STATES = (RecipientState.DELIVERED, RecipientState.FAILED)


@dataclass(frozen=True, slots=True)
class NewRecipient:
    address: str
    next_hop: str
    notify: str = ""
    orcpt: str = ""


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message as received, ready to be committed."""

    queue_id: str
    sender: str
    recipients: Sequence[NewRecipient]
    body: bytes
    received_at: float
    message_id: str | None
    origin: str
    client: str
    envid: str = ""
    ret: str = ""


@dataclass(frozen=True, slots=True)
class ClaimedRecipient:
    """A recipient handed to this delivery run, with what delivery needs of its message."""

    recipient_id: int
    address: str
    attempts: int
    message: int
    queue_id: str
    sender: str
    received_at: float
    size: int
    message_id: str | None
    envid: str
    ret: str
    notify: str
    orcpt: str
    delay_notified: bool


@dataclass(frozen=True, slots=True)
class RecipientOutcome:
    """The result of one attempt for one recipient."""

    recipient_id: int
    state: RecipientState
    next_hop: str
    reply: str
    next_attempt_at: float | None = None
    delay_notified: bool = False


@dataclass(frozen=True, slots=True)
class QueuedRecipient:
    address: str
    state: RecipientState
    next_hop: str
    attempts: int
    next_attempt_at: float
    last_error: str


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    queue_id: str
    sender: str
    received_at: float
    size: int
    message_id: str | None
    recipients: tuple[QueuedRecipient, ...]


def _insert(conn: Connection, message: NewMessage) -> None:
    pk = conn.execute(
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
    ).inserted_primary_key[0]
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


_DUE = and_(recipients.c.state == RecipientState.PENDING, recipients.c.lease_owner.is_(None))


def due_query(now: float, limit: int) -> select:  # type: ignore[type-arg]
    """The scheduler's query for due work (kept public so a test can read its query plan)."""
    return (
        select(recipients.c.id)
        .where(_DUE, recipients.c.next_attempt_at <= now)
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
            recipients.c.id,
            recipients.c.address,
            recipients.c.attempts,
            messages.c.id,
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
    return [ClaimedRecipient(*row[:-1], bool(row[-1])) for row in rows]


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


class Repository:
    """Domain verbs over one node's queue database."""

    def __init__(self, database: Database, writer: Writer) -> None:
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
        return await self._writer.submit(
            "outcome", lambda conn: _record(conn, outcomes, notices)
        )

    async def release_leases(self, *, except_owner: str | None = None) -> int:
        """Free recipients leased by other (dead) runs, or by anyone when no owner is kept."""
        return await self._writer.submit("release", lambda conn: _release(conn, except_owner))

    async def load_body(self, message: int) -> bytes | None:
        """The stored bytes of a message, or None when it is gone."""
        async with self.database.read_engine.connect() as conn:
            result = await conn.execute(select(bodies.c.data).where(bodies.c.message == message))
            return result.scalar_one_or_none()

    async def next_due(self) -> float | None:
        """When the earliest unclaimed pending recipient becomes due, if any."""
        async with self.database.read_engine.connect() as conn:
            result = await conn.execute(select(func.min(recipients.c.next_attempt_at)).where(_DUE))
            return result.scalar_one_or_none()

    async def stats(self) -> dict[str, int]:
        """Durable counters (commits:<kind>, ops:<kind>)."""
        async with self.database.read_engine.connect() as conn:
            result = await conn.execute(select(stats.c.name, stats.c.value))
            return dict(result.all())

    async def list_messages(self) -> list[QueuedMessage]:
        """Every queued message with its recipients, oldest first."""
        async with self.database.read_engine.connect() as conn:
            rows = await conn.execute(
                select(
                    messages.c.queue_id,
                    messages.c.sender,
                    messages.c.received_at,
                    messages.c.size,
                    messages.c.message_id,
                    recipients.c.address,
                    recipients.c.state,
                    recipients.c.next_hop,
                    recipients.c.attempts,
                    recipients.c.next_attempt_at,
                    recipients.c.last_error,
                )
                .join(recipients, recipients.c.message == messages.c.id)
                .order_by(messages.c.received_at, messages.c.id, recipients.c.id)
            )
            grouped: dict[
                str, tuple[tuple[str, str, float, int, str | None], list[QueuedRecipient]]
            ] = {}
            for qid, sender, at, size, mid, addr, state, hop, attempts, due, err in rows:
                entry = grouped.setdefault(qid, ((qid, sender, at, size, mid), []))
                entry[1].append(
                    QueuedRecipient(addr, RecipientState(state), hop, attempts, due, err)
                )
            return [QueuedMessage(*head, tuple(rcpts)) for head, rcpts in grouped.values()]
