"""The queue's verbs: enqueue, claim due recipients, record outcomes, look messages up.

Owns: every read and write of queue rows; the rule that a message row is deleted only when
none of its recipients is still pending.
Public: Repository, Recovery, RemovalNotices.
Failures: storage errors propagate; callers answer SMTP clients with a transient reply.
Limits: leases name the delivery run that holds them and never expire (a late renewal
would send a message twice): a run's leases are released at its clean stop, when the
supervisor reaps it, or at the next start (under the data-directory lock, every lease is
stale).
See also: storage/writer.py (group commit), hubd/delivery/scheduler.py (the caller).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, delete, select, update
from sqlalchemy.engine import Connection

from storage.claim import WAITING_DETAILS, claim_due, claimed
from storage.database import Database
from storage.enqueue import insert_messages
from storage.model import (
    Claim,
    ClaimedRecipient,
    NewMessage,
    RecipientOutcome,
    RecipientState,
    Settled,
)
from storage.outcomes import OutcomeBatch, record_outcomes
from storage.reader import QueueReader
from storage.schema import messages, recipients
from storage.settle import owe_notices
from storage.shards import queue_shards, shard_of
from storage.spool import Spool, StoredBody
from storage.sql import driver
from storage.writer import Writer


def _leased_by(run: str | None, but: str | None) -> ColumnElement[bool]:
    """Recipients leased by `run` (or by any run but `but`, or by any run at all)."""
    if run is not None:
        return recipients.c.lease_owner == run
    condition = recipients.c.lease_owner.is_not(None)
    return condition if but is None else and_(condition, recipients.c.lease_owner != but)


def _release(conn: Connection, run: str | None) -> int:
    stmt = update(recipients).where(_leased_by(run, None))
    return conn.execute(stmt.values(lease_owner=None)).rowcount


@dataclass(frozen=True, slots=True)
class Recovery:
    """What start-up found of a run that died: freed recipients, and messages now held."""

    released: int
    poisoned: tuple[str, ...]


def _recover(conn: Connection, owner: str, poison_threshold: int, dead_run: str | None) -> Recovery:
    leased = _leased_by(dead_run, owner)
    orphaned = select(recipients.c.message).where(leased)
    # Every message a dead run was delivering counts one crash (Exchange's poison count).
    conn.execute(
        update(messages).where(messages.c.id.in_(orphaned)).values(crashes=messages.c.crashes + 1)
    )
    released = conn.execute(update(recipients).where(leased).values(lease_owner=None)).rowcount
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


_REMOVED = (
    "SELECT id, upstream, upstream_incarnation, upstream_notified FROM messages WHERE queue_id = ?"
)


_BODY = "SELECT data, spool FROM bodies WHERE message = ?"
# Deferred and not in delivery: the WHERE of the partial index ix_recipients_due, word for word.
_WAITING_UNLEASED = "state = 'PENDING' AND lease_owner IS NULL"
# The queue's shard count is the meta row's, not this repository's: a stopped node's queue
# is opened with no count of its own.
_REDIRECT = (
    "UPDATE recipients SET redirect_to = ?, next_hop = ?, shard = ?, next_attempt_at = ?"
    " WHERE message = (SELECT id FROM messages WHERE queue_id = ?)"
    " AND state IN ('PENDING', 'HELD') AND lease_owner IS NULL"
)
FLUSH_CHUNK = 1000  # recipients made due per transaction: a flush never holds the queue long

RemovalNotices = Callable[[Sequence[ClaimedRecipient], StoredBody], Sequence[NewMessage]]
"""The DSNs owed for a removed message's waiting recipients (and its stored bytes)."""


def _queue_notices(db: sqlite3.Connection, pk: int, spool: Spool, notices: RemovalNotices) -> None:
    waiting = [claimed(row, "") for row in db.execute(WAITING_DETAILS, (pk,))]
    if not waiting:
        return
    data, spooled = db.execute(_BODY, (pk,)).fetchone()
    body = spool.body(data, spooled, waiting[0].size)
    insert_messages(db, notices(waiting, body), queue_shards(db) or 1)


def _remove(
    conn: Connection, queue_id: str, now: float, spool: Spool, notices: RemovalNotices | None
) -> bool:
    db = driver(conn)
    row = db.execute(_REMOVED, (queue_id,)).fetchone()
    if row is None:
        return False
    pk, upstream, incarnation, notified = row
    if notices is not None:
        _queue_notices(db, pk, spool, notices)
    if upstream and not notified:
        # The upstream keeps a shadow of it until told: without this notice it would
        # resubmit what the operator removed.
        owe_notices(db, {(upstream, incarnation): [queue_id]}, now)
    return conn.execute(delete(messages).where(messages.c.id == pk)).rowcount > 0


class Repository(QueueReader):
    """Domain verbs over one node's queue database: reads, and writes through the writer."""

    def __init__(self, database: Database, writer: Writer, *, shards: int = 1) -> None:
        super().__init__(database.read_engine, database.spool)
        self.database = database
        self._writer = writer
        self._shards = shards

    def _enqueue_many(self, conn: Connection, batch: list[NewMessage]) -> list[None]:
        insert_messages(driver(conn), batch, self._shards)
        return [None] * len(batch)

    def _record_many(self, conn: Connection, jobs: list[OutcomeBatch]) -> list[Settled]:
        return record_outcomes(driver(conn), jobs, self._shards)

    async def enqueue(self, message: NewMessage) -> None:
        """Commit a received message; return only once it is durable."""
        await self._writer.submit(
            "enqueue",
            lambda conn: self._enqueue_many(conn, [message])[0],
            bulk=self._enqueue_many,
            payload=message,
        )

    async def claim_due(self, now: float, limit: int, owner: str, shard: int = 0) -> Claim:
        """Lease up to `limit` due recipients of `shard` to the delivery run `owner`, with
        their bodies (when small), the duplicate check and the next due time."""
        return await self._writer.submit(
            "claim",
            lambda conn: claim_due(driver(conn), now, limit, owner, shard),
            # A lease lost in a power cut is harmless: every lease is stale at start-up.
            durable=False,
        )

    async def record_outcomes(
        self,
        outcomes: Sequence[RecipientOutcome],
        dsns: Sequence[NewMessage] = (),
        now: float = 0.0,
    ) -> Settled:
        """Record attempt results, shadows and their DSNs; committed with other jobs' outcomes."""
        job = OutcomeBatch(outcomes, dsns, now)
        return await self._writer.submit(
            "outcome",
            lambda conn: self._record_many(conn, [job])[0],
            bulk=self._record_many,
            payload=job,
            # Lost in a power cut, an outcome means one more delivery attempt (duplicates are
            # dropped at a hubd final hop; an MTA may deliver twice after a crash anyway), so
            # it need not wait for an fsync, nor hold the shared write lock through one.
            durable=False,
        )

    async def release_leases(self, run: str | None = None) -> int:
        """Free the recipients leased by `run` (at its clean stop), or by any run."""
        return await self._writer.submit("release", lambda conn: _release(conn, run))

    async def recover(
        self, owner: str, poison_threshold: int, *, dead_run: str | None = None
    ) -> Recovery:
        """Count a crash for the messages a dead run held (`dead_run`, or every run but
        `owner`), free them, and hold repeat offenders (poison)."""
        return await self._writer.submit(
            "recover", lambda conn: _recover(conn, owner, poison_threshold, dead_run)
        )

    async def collect_spool_garbage(self) -> list[str]:
        """Forget the spool files of deleted bodies; the caller unlinks them (committed)."""

        def apply(conn: Connection) -> list[str]:
            db = driver(conn)
            names = [name for (name,) in db.execute("SELECT name FROM spool_garbage LIMIT 1000")]
            db.executemany("DELETE FROM spool_garbage WHERE name = ?", [(n,) for n in names])
            return names

        return await self._writer.submit("spool", apply)

    async def sweep_spool(self) -> int:
        """At start-up (no session receiving yet): delete spool files no body refers to."""

        def apply(conn: Connection) -> set[str]:
            db = driver(conn)
            db.execute("DELETE FROM spool_garbage")
            return {name for (name,) in db.execute("SELECT spool FROM bodies WHERE spool != ''")}

        spool = self.database.spool
        spool.prepare()
        referenced = await self._writer.submit("spool", apply)
        return await asyncio.to_thread(spool.sweep, referenced)

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

    async def redirect(self, queue_id: str, target: str, next_hop: str, now: float) -> int:
        """Send a message's waiting recipients to `target` (host:port; their next hop is
        then `next_hop`, and their shard that hop's), due now; held ones stay held, and
        one in delivery now is left be (redirecting it could send it twice). How many."""

        def apply(conn: Connection) -> int:
            db = driver(conn)
            shard = shard_of(next_hop, queue_shards(db) or 1)
            return db.execute(_REDIRECT, (target, next_hop, shard, now, queue_id)).rowcount

        return await self._writer.submit("redirect", apply)

    async def make_due(self, now: float, next_hop: str | None = None) -> int:
        """Make every deferred recipient (of `next_hop`, or of all) due now, a thousand per
        transaction (flush: held recipients stay held, those in delivery are left be);
        returns how many."""
        hop = "" if next_hop is None else " AND next_hop = ?"
        sql = (
            "UPDATE recipients SET next_attempt_at = ? WHERE id IN (SELECT id FROM recipients"
            f" WHERE {_WAITING_UNLEASED} AND next_attempt_at > ?{hop} LIMIT {FLUSH_CHUNK})"
        )
        params = (now, now) if next_hop is None else (now, now, next_hop)
        total = 0
        while True:
            changed = await self._writer.submit(
                "flush", lambda conn: driver(conn).execute(sql, params).rowcount
            )
            total += changed
            if changed < FLUSH_CHUNK:
                return total

    async def remove(
        self, queue_id: str, now: float, notices: RemovalNotices | None = None
    ) -> bool:
        """Delete a message outright (an operator's decision), recording in the same
        transaction the discard notice its upstream is owed and, with `notices`, the DSNs
        it builds for the recipients still waiting."""
        spool = self.database.spool
        return await self._writer.submit(
            "remove", lambda conn: _remove(conn, queue_id, now, spool, notices)
        )
