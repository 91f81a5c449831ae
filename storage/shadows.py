"""XSHADOW bookkeeping in the queue: shadows, discard notices, take-overs, origin keys.

Owns, upstream (U): shadows of messages handed to a peer, notices that came before their
shadow, the ids taken over from a dead peer, what is known of each peer. Downstream (D):
the notices owed to each upstream incarnation, in sequence. Final delivery: the
(origin key, recipient) pairs already delivered.
Public: ShadowLedger, AckTooHigh, Discarded. (Shadows are created, and origin keys
remembered, with the outcomes that cause them: storage/outcomes.py.)
Failures: AckTooHigh when an XQDISCARD acknowledges past what was listed.
See also: docs/xshadow.md (the protocol), storage/repository.py (_settle).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.model import HeldShadow, RecipientState, Settled
from storage.schema import (
    delivered_origins,
    early_discards,
    messages,
    notices,
    peers,
    recipients,
    shadows,
    taken,
    upstreams,
)
from storage.settle import settle
from storage.sql import driver
from storage.writer import Writer


class AckTooHigh(Exception):
    """XQDISCARD acknowledged a sequence number that was never listed."""


@dataclass(frozen=True, slots=True)
class Discarded:
    """A shadow dropped because its peer delivered the message onward (or it expired)."""

    queue_id: str
    peer_queue_id: str
    sender: str
    recipients: tuple[str, ...]


def _drop_shadow(conn: Connection, shadow_id: int, state: RecipientState) -> None:
    conn.execute(
        update(recipients).where(recipients.c.shadow == shadow_id).values(state=state, shadow=None)
    )
    conn.execute(delete(shadows).where(shadows.c.id == shadow_id))


# ---- the ledger's own operations -----------------------------------------------------------


def _register_upstream(conn: Connection, name: str, incarnation: str, now: float) -> int:
    # A new incarnation of the same upstream lost its shadows: what was owed to the old
    # one is owed to nobody (XSHADOW.md).
    old = and_(upstreams.c.name == name, upstreams.c.incarnation != incarnation)
    dropped = conn.execute(
        delete(notices).where(
            notices.c.upstream == name, notices.c.upstream_incarnation != incarnation
        )
    ).rowcount
    conn.execute(delete(upstreams).where(old))
    conn.execute(
        sqlite_insert(upstreams)
        .values(name=name, incarnation=incarnation, last_asked_at=now)
        .on_conflict_do_nothing()
    )
    return dropped


def _discard_notices(
    conn: Connection, name: str, incarnation: str, *, ack: int | None, limit: int, now: float
) -> tuple[list[str], int]:
    key = and_(upstreams.c.name == name, upstreams.c.incarnation == incarnation)
    row = conn.execute(select(upstreams.c.last_listed).where(key)).first()
    if row is None:
        raise AckTooHigh("no XSHADOW session for this upstream")
    last_listed = int(row.last_listed)
    if ack is not None:
        if ack > last_listed:
            raise AckTooHigh(f"ACK={ack} is past the last sequence listed ({last_listed})")
        conn.execute(
            delete(notices).where(
                notices.c.upstream == name,
                notices.c.upstream_incarnation == incarnation,
                notices.c.seq <= ack,
            )
        )
    listed = conn.execute(
        select(notices.c.seq, notices.c.queue_id)
        .where(
            notices.c.upstream == name,
            notices.c.upstream_incarnation == incarnation,
            notices.c.seq > (ack if ack is not None else 0),
        )
        .order_by(notices.c.seq)
        .limit(limit)
    ).all()
    top = listed[-1].seq if listed else (ack or 0)
    conn.execute(
        update(upstreams)
        .where(key)
        .values(last_listed=func.max(upstreams.c.last_listed, top), last_asked_at=now)
    )
    return [r.queue_id for r in listed], int(top)


def _message_rows(conn: Connection, pks: Sequence[int]) -> dict[int, tuple[str, str]]:
    rows = conn.execute(
        select(messages.c.id, messages.c.queue_id, messages.c.sender).where(messages.c.id.in_(pks))
    )
    return {r.id: (r.queue_id, r.sender) for r in rows}


def _shadow_recipients(conn: Connection, shadow_id: int) -> tuple[str, ...]:
    return tuple(
        conn.execute(select(recipients.c.address).where(recipients.c.shadow == shadow_id)).scalars()
    )


def _resubmit(
    conn: Connection,
    address: str,
    now: float,
    *,
    incarnation: str | None = None,
    other_than: str | None = None,
    remember_taken: bool,
) -> list[HeldShadow]:
    """Put a peer's shadows (of one incarnation, of all but one, or all) back in the queue."""
    query = select(shadows).where(shadows.c.peer_address == address)
    if incarnation is not None:
        query = query.where(shadows.c.peer_incarnation == incarnation)
    if other_than is not None:
        query = query.where(shadows.c.peer_incarnation != other_than)
    rows = conn.execute(query).all()
    info = _message_rows(conn, [r.message for r in rows])
    out = []
    for row in rows:
        addresses = _shadow_recipients(conn, row.id)
        conn.execute(
            update(recipients)
            .where(recipients.c.shadow == row.id)
            .values(
                state=RecipientState.PENDING,
                shadow=None,
                next_attempt_at=now,
                last_error=f"resubmitted: shadow held for {row.peer_name}",
            )
        )
        conn.execute(delete(shadows).where(shadows.c.id == row.id))
        if remember_taken:
            conn.execute(
                sqlite_insert(taken)
                .values(
                    peer_address=address,
                    peer_incarnation=row.peer_incarnation,
                    peer_queue_id=row.peer_queue_id,
                    taken_at=now,
                    queue_id=info[row.message][0],
                )
                .on_conflict_do_nothing()
            )
        out.append(
            HeldShadow(
                info[row.message][0],
                address,
                row.peer_name,
                row.peer_incarnation,
                row.peer_queue_id,
                row.created_at,
                addresses,
            )
        )
    return out


class ShadowLedger:
    """XSHADOW verbs over the queue database; writes go through the group-commit writer."""

    def __init__(self, writer: Writer, read_engine: AsyncEngine) -> None:
        self._writer = writer
        self._read = read_engine

    # -- downstream (D) --

    async def register_upstream(self, name: str, incarnation: str, now: float) -> int:
        """An upstream said XSHADOW; returns how many notices to its old incarnations went."""
        return await self._writer.submit(
            "xshadow", lambda conn: _register_upstream(conn, name, incarnation, now)
        )

    async def discard_notices(
        self, name: str, incarnation: str, ack: int | None, limit: int, now: float
    ) -> tuple[list[str], int]:
        """XQDISCARD: forget notices up to `ack`, list the next `limit`, and the top sequence."""
        return await self._writer.submit(
            "xqdiscard",
            lambda conn: _discard_notices(conn, name, incarnation, ack=ack, limit=limit, now=now),
        )

    async def drop_taken(
        self, name: str, incarnation: str, queue_ids: Sequence[str], now: float
    ) -> tuple[list[Discarded], Settled]:
        """XQTAKEN: drop the pending recipients of these messages from that upstream."""

        def apply(conn: Connection) -> tuple[list[Discarded], Settled]:
            rows = conn.execute(
                select(messages.c.id, messages.c.queue_id, messages.c.sender).where(
                    messages.c.queue_id.in_(list(queue_ids)),
                    messages.c.upstream == name,
                    messages.c.upstream_incarnation == incarnation,
                )
            ).all()
            dropped = []
            for row in rows:
                pending = tuple(
                    conn.execute(
                        select(recipients.c.address).where(
                            recipients.c.message == row.id,
                            recipients.c.state.in_([RecipientState.PENDING, RecipientState.HELD]),
                            recipients.c.lease_owner.is_(None),
                        )
                    ).scalars()
                )
                if not pending:
                    continue
                conn.execute(
                    update(recipients)
                    .where(
                        recipients.c.message == row.id,
                        recipients.c.address.in_(pending),
                        recipients.c.lease_owner.is_(None),
                    )
                    .values(state=RecipientState.DROPPED, last_error="taken over by upstream")
                )
                # The upstream resubmitted it: it wants no notice for it.
                conn.execute(
                    update(messages).where(messages.c.id == row.id).values(upstream_notified=1)
                )
                dropped.append(Discarded(row.queue_id, row.queue_id, row.sender, pending))
            return dropped, settle(driver(conn), [r.id for r in rows], now)

        return await self._writer.submit("xqtaken", apply)

    # -- shadow before acknowledgement, at the accepting node --

    async def owe_copy(self, queue_id: str, peer: str, incarnation: str, now: float) -> bool:
        """Record that this message's departure owes `peer` a discard notice (it is about
        to hold a redundancy copy); False when the message has left already (no copy
        needed: it is delivered, or a next hop holds it under a shadow)."""

        def apply(conn: Connection) -> bool:
            _register_upstream(conn, peer, incarnation, now)
            row = conn.execute(select(messages.c.id).where(messages.c.queue_id == queue_id)).first()
            if row is None:
                return False
            conn.execute(
                update(messages)
                .where(messages.c.id == row.id)
                .values(upstream=peer, upstream_incarnation=incarnation)
            )
            waiting = conn.execute(
                select(func.count())
                .select_from(recipients)
                .where(
                    recipients.c.message == row.id,
                    recipients.c.state.in_([RecipientState.PENDING, RecipientState.HELD]),
                )
            ).scalar_one()
            return bool(waiting)

        return await self._writer.submit("owe-copy", apply)

    async def release_copied(self, queue_id: str, now: float) -> None:
        """The copy is made (or, with `prefer`, given up): the message is due now."""

        def apply(conn: Connection) -> None:
            target = select(messages.c.id).where(messages.c.queue_id == queue_id)
            conn.execute(
                update(recipients)
                .where(
                    recipients.c.message.in_(target),
                    recipients.c.state == RecipientState.PENDING,
                    recipients.c.lease_owner.is_(None),
                    recipients.c.attempts == 0,
                )
                .values(next_attempt_at=now)
            )

        await self._writer.submit("release-copied", apply)

    async def withdraw(self, queue_id: str, now: float) -> bool:
        """`require` found no copy: drop the message (its departure owes the peer tried a
        notice, so a copy it may hold goes too); False when part of it is being delivered."""

        def apply(conn: Connection) -> bool:
            row = conn.execute(select(messages.c.id).where(messages.c.queue_id == queue_id)).first()
            if row is None:
                return False
            leased = conn.execute(
                select(func.count())
                .select_from(recipients)
                .where(recipients.c.message == row.id, recipients.c.lease_owner.is_not(None))
            ).scalar_one()
            if leased:
                return False
            conn.execute(
                update(recipients)
                .where(recipients.c.message == row.id)
                .values(state=RecipientState.DROPPED, last_error="no redundant copy made")
            )
            settle(driver(conn), [row.id], now)
            return True

        return await self._writer.submit("withdraw", apply)

    # -- upstream (U) --

    async def apply_discards(
        self, peer_incarnation: str, peer_queue_ids: Sequence[str], now: float
    ) -> tuple[list[Discarded], Settled]:
        """Drop the shadows these notices are for; keep notices for shadows not yet seen."""

        def apply(conn: Connection) -> tuple[list[Discarded], Settled]:
            found = conn.execute(
                select(shadows.c.id, shadows.c.message, shadows.c.peer_queue_id).where(
                    shadows.c.peer_incarnation == peer_incarnation,
                    shadows.c.peer_queue_id.in_(list(peer_queue_ids)),
                )
            ).all()
            known = {r.peer_queue_id for r in found}
            for queue_id in set(peer_queue_ids) - known:
                conn.execute(
                    sqlite_insert(early_discards)
                    .values(
                        peer_incarnation=peer_incarnation, peer_queue_id=queue_id, received_at=now
                    )
                    .on_conflict_do_nothing()
                )
            info = _message_rows(conn, [r.message for r in found])
            discarded = []
            for row in found:
                addresses = _shadow_recipients(conn, row.id)
                _drop_shadow(conn, row.id, RecipientState.DELIVERED)
                queue_id, sender = info[row.message]
                discarded.append(Discarded(queue_id, row.peer_queue_id, sender, addresses))
            return discarded, settle(driver(conn), [r.message for r in found], now)

        return await self._writer.submit("discard", apply)

    async def peer_answered(
        self, address: str, name: str, incarnation: str, now: float
    ) -> list[HeldShadow]:
        """Record a peer's XSHADOW reply; put back into the queue, and return, every shadow
        held for it under another incarnation (it lost its queue).

        One transaction, and at every hello: a crash between noting the new incarnation and
        resubmitting, or a shadow committed under the old one afterwards, loses nothing.
        """

        def apply(conn: Connection) -> list[HeldShadow]:
            row = conn.execute(
                select(peers.c.incarnation).where(peers.c.address == address)
            ).first()
            if row is None:
                conn.execute(
                    insert(peers).values(address=address, name=name, incarnation=incarnation)
                )
            elif row.incarnation != incarnation:
                conn.execute(
                    update(peers)
                    .where(peers.c.address == address)
                    .values(name=name, incarnation=incarnation, ack=0)
                )
            return _resubmit(conn, address, now, other_than=incarnation, remember_taken=False)

        return await self._writer.submit("peer", apply)

    async def set_ack(self, address: str, incarnation: str, ack: int) -> None:
        """Remember the highest notice sequence processed for this peer incarnation."""

        def apply(conn: Connection) -> None:
            conn.execute(
                update(peers)
                .where(peers.c.address == address, peers.c.incarnation == incarnation)
                .values(ack=ack)
            )

        await self._writer.submit("peer", apply)

    async def set_dead(self, address: str, dead: bool) -> None:
        def apply(conn: Connection) -> None:
            conn.execute(update(peers).where(peers.c.address == address).values(dead=int(dead)))

        await self._writer.submit("peer", apply)

    async def resubmit(
        self,
        address: str,
        incarnation: str | None,
        now: float,
        *,
        remember_taken: bool,
    ) -> list[HeldShadow]:
        """Put the shadows held for a peer (one incarnation, or all) back into the queue."""
        return await self._writer.submit(
            "resubmit",
            lambda conn: _resubmit(
                conn, address, now, incarnation=incarnation, remember_taken=remember_taken
            ),
        )

    async def forget_taken(self, address: str, incarnation: str, queue_ids: Sequence[str]) -> None:
        def apply(conn: Connection) -> None:
            conn.execute(
                delete(taken).where(
                    taken.c.peer_address == address,
                    taken.c.peer_incarnation == incarnation,
                    taken.c.peer_queue_id.in_(list(queue_ids)),
                )
            )

        await self._writer.submit("taken", apply)

    async def expire(
        self, *, now: float, auto_discard: float, dedup_window: float
    ) -> list[HeldShadow]:
        """Drop shadows, early notices and unasked notices past auto_discard; old origin keys."""

        def apply(conn: Connection) -> list[HeldShadow]:
            cutoff = now - auto_discard
            rows = conn.execute(select(shadows).where(shadows.c.created_at < cutoff)).all()
            info = _message_rows(conn, [r.message for r in rows])
            out = []
            for row in rows:
                addresses = _shadow_recipients(conn, row.id)
                _drop_shadow(conn, row.id, RecipientState.DELIVERED)
                out.append(
                    HeldShadow(
                        info[row.message][0],
                        row.peer_address,
                        row.peer_name,
                        row.peer_incarnation,
                        row.peer_queue_id,
                        row.created_at,
                        addresses,
                    )
                )
            settle(driver(conn), [r.message for r in rows], now)
            conn.execute(delete(early_discards).where(early_discards.c.received_at < cutoff))
            stale = select(upstreams.c.name, upstreams.c.incarnation).where(
                upstreams.c.last_asked_at < cutoff
            )
            for name, incarnation in conn.execute(stale).all():
                conn.execute(
                    delete(notices).where(
                        notices.c.upstream == name, notices.c.upstream_incarnation == incarnation
                    )
                )
            conn.execute(delete(taken).where(taken.c.taken_at < cutoff))
            conn.execute(
                delete(delivered_origins).where(
                    delivered_origins.c.delivered_at < now - dedup_window
                )
            )
            return out

        return await self._writer.submit("expire", apply)

    # -- reads --

    async def seen_origins(self, origin: str, addresses: Sequence[str]) -> set[str]:
        """Which of these recipients already got this origin key at their final hop."""
        async with self._read.connect() as conn:
            result = await conn.execute(
                select(delivered_origins.c.recipient).where(
                    delivered_origins.c.origin == origin,
                    delivered_origins.c.recipient.in_([a.lower() for a in addresses]),
                )
            )
            return set(result.scalars())

    async def peer_state(self, address: str) -> tuple[str, str, int, bool] | None:
        """(name, incarnation, ack, dead) of a peer, if known."""
        async with self._read.connect() as conn:
            row = (
                await conn.execute(
                    select(peers.c.name, peers.c.incarnation, peers.c.ack, peers.c.dead).where(
                        peers.c.address == address
                    )
                )
            ).first()
        return None if row is None else (row.name, row.incarnation, int(row.ack), bool(row.dead))

    async def heartbeat_targets(self) -> list[str]:
        """Peer addresses that hold shadows of ours, are dead, or are owed an XQTAKEN."""
        async with self._read.connect() as conn:
            held = select(shadows.c.peer_address)
            dead = select(peers.c.address).where(peers.c.dead == 1)
            owed = select(taken.c.peer_address)
            result = await conn.execute(held.union(dead, owed))
            return sorted(result.scalars())

    async def dead_peers(self) -> list[str]:
        async with self._read.connect() as conn:
            result = await conn.execute(select(peers.c.address).where(peers.c.dead == 1))
            return list(result.scalars())

    async def taken_ids(self, address: str, incarnation: str) -> list[str]:
        """The peer's ids taken over whose resubmitted copy has left this node.

        Until it has (handed on under a shadow, delivered, failed with its DSN queued), the
        peer keeps its copy: a message is always on two disks or delivered.
        """
        waiting = (
            select(messages.c.queue_id)
            .join(recipients, recipients.c.message == messages.c.id)
            .where(recipients.c.state.in_([RecipientState.PENDING, RecipientState.HELD]))
        )
        async with self._read.connect() as conn:
            result = await conn.execute(
                select(taken.c.peer_queue_id).where(
                    taken.c.peer_address == address,
                    taken.c.peer_incarnation == incarnation,
                    taken.c.queue_id.not_in(waiting),
                )
            )
            return list(result.scalars())

    async def owed_notices(self) -> int:
        """Discard notices this node owes its upstreams."""
        async with self._read.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(notices))).scalar_one())
