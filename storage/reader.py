"""Reading the queue: message listings, bodies, due times and counters, never writing.

Owns: every read query, over an async (aiosqlite) engine; works on a read-only open too, so
`hubd queue list` can look at a running node's queue.
Public: QueueReader, QueueDepths, HopDepth, DUE.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.model import HeldShadow, QueuedMessage, QueuedRecipient, RecipientState
from storage.schema import bodies, messages, notices, recipients, shadows, stats
from storage.spool import Spool, StoredBody

DUE = and_(recipients.c.state == RecipientState.PENDING, recipients.c.lease_owner.is_(None))


class QueueReader:
    """Read queries over one queue database (whose spool files are in `spool`)."""

    def __init__(self, engine: AsyncEngine, spool: Spool) -> None:
        self._read = engine
        self._spool = spool

    async def load_body(self, message: int) -> StoredBody | None:
        """The stored bytes of a message (by row id), or None when it is gone."""
        return await self._body(messages.c.id == message)

    async def body_of(self, queue_id: str) -> StoredBody | None:
        """The stored bytes of a message by its queue id, or None when there is none."""
        return await self._body(messages.c.queue_id == queue_id)

    async def _body(self, which: ColumnElement[bool]) -> StoredBody | None:
        async with self._read.connect() as conn:
            result = await conn.execute(
                select(bodies.c.data, bodies.c.spool, messages.c.size)
                .join(messages, messages.c.id == bodies.c.message)
                .where(which)
            )
            row = result.first()
        return None if row is None else self._spool.body(row.data, row.spool, row.size)

    async def next_due(self) -> float | None:
        """When the earliest unclaimed pending recipient becomes due, if any."""
        async with self._read.connect() as conn:
            result = await conn.execute(select(func.min(recipients.c.next_attempt_at)).where(DUE))
            due: float | None = result.scalar_one_or_none()
            return due

    async def stats(self) -> dict[str, int]:
        """Durable counters (commits:<kind>, ops:<kind>)."""
        async with self._read.connect() as conn:
            result = await conn.execute(select(stats.c.name, stats.c.value))
            return dict(result.all())

    async def list_messages(self, queue_id: str | None = None) -> list[QueuedMessage]:
        """Queued messages with their recipients, oldest first (or the one with `queue_id`)."""
        query = (
            select(
                messages.c.queue_id,
                messages.c.sender,
                messages.c.received_at,
                messages.c.size,
                messages.c.message_id,
                messages.c.origin,
                messages.c.client,
                messages.c.crashes,
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
        if queue_id is not None:
            query = query.where(messages.c.queue_id == queue_id)
        async with self._read.connect() as conn:
            rows = (await conn.execute(query)).all()
        heads: dict[str, tuple[str, str, float, int, str | None, str, str, int]] = {}
        grouped: dict[str, list[QueuedRecipient]] = defaultdict(list)
        for row in rows:
            heads.setdefault(row[0], tuple(row[:8]))
            address, state, hop, attempts, due, error = row[8:]
            grouped[row[0]].append(
                QueuedRecipient(address, RecipientState(state), hop, attempts, due, error)
            )
        return [QueuedMessage(*head, tuple(grouped[qid])) for qid, head in heads.items()]

    async def shadows(self) -> list[HeldShadow]:
        """Every shadow this node holds, oldest first."""
        async with self._read.connect() as conn:
            rows = (
                await conn.execute(
                    select(shadows, messages.c.queue_id)
                    .join(messages, messages.c.id == shadows.c.message)
                    .order_by(shadows.c.created_at)
                )
            ).all()
            out = []
            for row in rows:
                addresses = (
                    await conn.execute(
                        select(recipients.c.address).where(recipients.c.shadow == row.id)
                    )
                ).scalars()
                out.append(
                    HeldShadow(
                        row.queue_id,
                        row.peer_address,
                        row.peer_name,
                        row.peer_incarnation,
                        row.peer_queue_id,
                        row.created_at,
                        tuple(addresses),
                    )
                )
            return out

    async def depths(self) -> QueueDepths:
        """Recipients waiting (pending or held) per next hop, the oldest of their messages,
        and the shadows held and discard notices owed: what the admin API and /metrics show."""
        waiting = recipients.c.state.in_([RecipientState.PENDING, RecipientState.HELD])
        async with self._read.connect() as conn:
            rows = (
                await conn.execute(
                    select(
                        recipients.c.next_hop,
                        recipients.c.state,
                        func.count(),
                        func.min(messages.c.received_at),
                    )
                    .join(messages, messages.c.id == recipients.c.message)
                    .where(waiting)
                    .group_by(recipients.c.next_hop, recipients.c.state)
                )
            ).all()
            held = (await conn.execute(select(func.count()).select_from(shadows))).scalar_one()
            owed = (await conn.execute(select(func.count()).select_from(notices))).scalar_one()
        hops: dict[str, HopDepth] = {}
        for hop, state, count, oldest in rows:
            depth = hops.get(hop, HopDepth(hop))
            pending, held_here = depth.pending, depth.held
            if state == RecipientState.HELD:
                held_here += count
            else:
                pending += count
            first = oldest if depth.oldest is None else min(depth.oldest, oldest)
            hops[hop] = HopDepth(hop, pending, held_here, first)
        return QueueDepths(tuple(hops[h] for h in sorted(hops)), int(held), int(owed))


@dataclass(frozen=True, slots=True)
class HopDepth:
    """Recipients waiting for one next hop, and when the oldest of their messages came."""

    next_hop: str
    pending: int = 0
    held: int = 0
    oldest: float | None = None


@dataclass(frozen=True, slots=True)
class QueueDepths:
    hops: tuple[HopDepth, ...]
    shadows_held: int
    notices_owed: int

    @property
    def oldest(self) -> float | None:
        """When the oldest message still waiting was received."""
        return min((h.oldest for h in self.hops if h.oldest is not None), default=None)
