"""Leasing due recipients to a delivery run, with what delivery needs of them.

Owns: the due-work query (an index search, whatever the queue holds), the lease, and in the
same write transaction the small bodies, the final-hop duplicate check and the time the
next unclaimed recipient is due, so delivery makes no other read per message.
Public: claim_due(), DUE_SQL, LEASE_SQL, SMALL_BODY.
Limits: bodies over SMALL_BODY are not read here (never megabytes inside the write lock).
See also: storage/writer.py (the transaction), hubd/delivery/scheduler.py (the caller).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from storage.model import Claim, ClaimedRecipient
from storage.spool import StoredBody
from storage.sql import IN_IDS, ids_param

SMALL_BODY = 1 << 20

# Matches the partial index ix_recipients_due (its WHERE must appear here word for word).
_DUE = "state = 'PENDING' AND lease_owner IS NULL"
DUE_SQL = (
    f"SELECT id FROM recipients WHERE shard = ? AND {_DUE} AND next_attempt_at <= ?"
    " ORDER BY next_attempt_at LIMIT ?"
)
LEASE_SQL = f"UPDATE recipients SET lease_owner = ? WHERE id IN ({DUE_SQL}) RETURNING id"
_DETAILS = (
    "SELECT r.id, r.address, r.attempts, r.message, m.queue_id, m.sender, m.received_at,"
    " m.size, m.message_id, m.origin, m.envid, m.ret, r.notify, r.orcpt, r.delay_notified,"
    " r.redirect_to"
    " FROM recipients r JOIN messages m ON m.id = r.message"
    f" WHERE r.id {IN_IDS} ORDER BY r.next_attempt_at, r.id"
)
_BODIES = f"SELECT message, data FROM bodies WHERE spool = '' AND message {IN_IDS}"
_DELIVERED = f"SELECT origin, recipient FROM delivered_origins WHERE origin {IN_IDS}"
_NEXT_DUE = f"SELECT min(next_attempt_at) FROM recipients WHERE shard = ? AND {_DUE}"


# The same details for the recipients still waiting (pending or held) of one message.
WAITING_DETAILS = (
    "SELECT r.id, r.address, r.attempts, r.message, m.queue_id, m.sender, m.received_at,"
    " m.size, m.message_id, m.origin, m.envid, m.ret, r.notify, r.orcpt, r.delay_notified,"
    " r.redirect_to"
    " FROM recipients r JOIN messages m ON m.id = r.message"
    " WHERE r.message = ? AND r.state IN ('PENDING', 'HELD') ORDER BY r.id"
)


def claimed(row: tuple[Any, ...], owner: str) -> ClaimedRecipient:
    (rid, address, attempts, message, queue_id, sender, received_at, size, message_id) = row[:9]
    (origin, envid, ret, notify, orcpt, delay_notified, redirect_to) = row[9:]
    return ClaimedRecipient(
        rid,
        address,
        attempts,
        message,
        queue_id,
        sender,
        received_at,
        size,
        message_id,
        origin,
        envid,
        ret,
        notify,
        orcpt,
        bool(delay_notified),
        owner,
        redirect_to,
    )


def claim_due(db: sqlite3.Connection, now: float, limit: int, owner: str, shard: int = 0) -> Claim:
    """Lease up to `limit` recipients of `shard` due at `now` to `owner`, oldest due first."""
    ids = [pk for (pk,) in db.execute(LEASE_SQL, (owner, shard, now, limit))]
    next_due = None if len(ids) == limit else db.execute(_NEXT_DUE, (shard,)).fetchone()[0]
    if not ids:
        return Claim(next_due=next_due)
    recipients = tuple(claimed(row, owner) for row in db.execute(_DETAILS, (ids_param(ids),)))
    small = {r.message for r in recipients if r.size <= SMALL_BODY}
    bodies = {
        message: StoredBody(data) for message, data in db.execute(_BODIES, (ids_param(small),))
    }
    origins = {r.origin for r in recipients if r.origin}
    delivered = frozenset(db.execute(_DELIVERED, (ids_param(origins),)))
    return Claim(recipients, bodies, delivered, next_due)
