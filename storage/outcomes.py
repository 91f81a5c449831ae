"""Recording delivery attempts: many jobs' outcomes in one pass of plain statements.

Owns: a recipient's new state after an attempt (only by the run that holds its lease), the
shadow created by a hand-off to a peer (and the discard notice that came before it), the
origin keys of final deliveries, the DSNs caused by the same outcomes, and settling the
messages touched.
Public: OutcomeBatch, record_outcomes().
Failures: an outcome whose lease is no longer its run's is not applied, and is logged.
See also: storage/settle.py, storage/enqueue.py (DSNs), storage/writer.py (the batch).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, replace

from storage.enqueue import insert_messages
from storage.model import NewMessage, RecipientOutcome, RecipientState, Settled, ShadowRecord
from storage.settle import settle
from storage.shards import shard_of
from storage.sql import IN_IDS, ids_param

log = logging.getLogger(__name__)

_UPDATE = (
    "UPDATE recipients SET state = ?, next_hop = ?, shard = ?, last_error = ?,"
    " attempts = attempts + ?,"
    " lease_owner = NULL, delay_notified = max(delay_notified, ?),"
    " next_attempt_at = coalesce(?, next_attempt_at), shadow = coalesce(?, shadow)"
    " WHERE id = ? AND lease_owner = ?"
)
_SHADOW = (
    "INSERT INTO shadows (message, peer_address, peer_name, peer_incarnation, peer_queue_id,"
    " created_at) VALUES (?, ?, ?, ?, ?, ?)"
)
_EARLY = f"SELECT peer_incarnation, peer_queue_id FROM early_discards WHERE peer_queue_id {IN_IDS}"
_FORGET_EARLY = "DELETE FROM early_discards WHERE peer_incarnation = ? AND peer_queue_id = ?"
_DROP_SHADOW_RECIPIENTS = "UPDATE recipients SET state = ?, shadow = NULL WHERE shadow = ?"
_DROP_SHADOW = "DELETE FROM shadows WHERE id = ?"
_ORIGIN = (
    "INSERT INTO delivered_origins (origin, recipient, delivered_at) VALUES (?, ?, ?)"
    " ON CONFLICT DO NOTHING"
)


@dataclass(frozen=True, slots=True)
class OutcomeBatch:
    """One delivery job's outcomes and the DSNs they caused, committed together."""

    outcomes: Sequence[RecipientOutcome]
    dsns: Sequence[NewMessage] = ()
    now: float = 0.0


def drop_shadow(db: sqlite3.Connection, shadow_id: int, state: RecipientState) -> None:
    """Forget a shadow; its recipients move to `state`."""
    db.execute(_DROP_SHADOW_RECIPIENTS, (state, shadow_id))
    db.execute(_DROP_SHADOW, (shadow_id,))


def _create_shadows(db: sqlite3.Connection, job: OutcomeBatch) -> dict[ShadowRecord, int]:
    """Insert the shadows of this job's hand-offs; returns their ids."""
    ids: dict[ShadowRecord, int] = {}
    for outcome in job.outcomes:
        record = outcome.shadow
        if record is not None and record not in ids:
            cursor = db.execute(
                _SHADOW,
                (
                    outcome.recipient.message,
                    record.peer_address,
                    record.peer_name,
                    record.peer_incarnation,
                    record.peer_queue_id,
                    job.now,
                ),
            )
            assert cursor.lastrowid is not None
            ids[record] = cursor.lastrowid
    return ids


def _early_discards(
    db: sqlite3.Connection, shadow_ids: dict[ShadowRecord, int]
) -> tuple[ShadowRecord, ...]:
    """Shadows whose peer's discard notice arrived before they were committed: drop them."""
    if not shadow_ids:
        return ()
    queue_ids = {record.peer_queue_id for record in shadow_ids}
    early = set(db.execute(_EARLY, (ids_param(queue_ids),)))
    found = []
    for record, shadow_id in shadow_ids.items():
        if (record.peer_incarnation, record.peer_queue_id) in early:
            db.execute(_FORGET_EARLY, (record.peer_incarnation, record.peer_queue_id))
            drop_shadow(db, shadow_id, RecipientState.DELIVERED)
            found.append(record)
    return tuple(found)


def _update_row(
    outcome: RecipientOutcome, shadow_id: int | None, shards: int
) -> tuple[object, ...]:
    recipient = outcome.recipient
    return (
        outcome.state.value,
        outcome.next_hop,
        shard_of(outcome.next_hop, shards),
        outcome.reply,
        int(outcome.counted),
        int(outcome.delay_notified),
        outcome.next_attempt_at,
        shadow_id,
        recipient.recipient_id,
        recipient.lease_owner,
    )


def record_outcomes(db: sqlite3.Connection, jobs: list[OutcomeBatch], shards: int) -> list[Settled]:
    """Apply every job's outcomes, then settle the messages they touched; one Settled each."""
    dsns = [dsn for job in jobs for dsn in job.dsns]
    if dsns:
        insert_messages(db, dsns, shards)
    rows = []
    shadows = []
    for job in jobs:
        shadow_ids = _create_shadows(db, job)
        rows += [
            _update_row(o, shadow_ids[o.shadow] if o.shadow else None, shards) for o in job.outcomes
        ]
        shadows.append(shadow_ids)
    cursor = db.executemany(_UPDATE, rows)
    if cursor.rowcount != len(rows):
        log.error(
            "%d of %d outcomes not recorded: their leases belong to another run",
            len(rows) - cursor.rowcount,
            len(rows),
        )
    early = [_early_discards(db, shadow_ids) for shadow_ids in shadows]
    now = max(job.now for job in jobs)
    db.executemany(
        _ORIGIN,
        [
            (o.recipient.origin, o.recipient.address.lower(), job.now)
            for job in jobs
            for o in job.outcomes
            if o.final and o.recipient.origin
        ],
    )
    touched = {o.recipient.message for job in jobs for o in job.outcomes}
    settled = settle(db, touched, now)
    return [_share(settled, job, dropped) for job, dropped in zip(jobs, early, strict=True)]


def _share(settled: Settled, job: OutcomeBatch, discarded: tuple[ShadowRecord, ...]) -> Settled:
    """The part of a batch's Settled that concerns this job's messages."""
    mine = {o.recipient.queue_id for o in job.outcomes}
    return replace(
        settled,
        left=tuple(q for q in settled.left if q in mine),
        finished=tuple(q for q in settled.finished if q in mine),
        discarded=discarded,
    )
