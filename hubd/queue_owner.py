"""The duties of the one owner of a node's queue file: recovery at start and after a child
dies, and the file's upkeep in the background.

Owns: freeing what a dead run held (counting a crash for each of its messages, and holding
those that crashed too often as POISON), sweeping orphaned spool files at start-up, and
starting the WAL checkpoints and spool clean-up.
Public: recover_queue(), start_upkeep().
See also: hubd/supervisor.py and hubd/node.py (the owners: a supervisor, or a one-process
node), storage/upkeep.py.
"""

from __future__ import annotations

import asyncio
import logging

from hubd.tracking import Tracker, TrackingEvent
from storage import Database, Repository, Upkeep

log = logging.getLogger(__name__)


def start_upkeep(database: Database, repository: Repository, group: asyncio.TaskGroup) -> Upkeep:
    """WAL checkpoints and spool clean-up in the background, for the queue's one owner."""
    upkeep = Upkeep(database.path, database.spool, repository.collect_spool_garbage)
    group.create_task(upkeep.run(), name="queue-upkeep")
    return upkeep


async def recover_queue(
    repository: Repository,
    tracker: Tracker,
    owner: str,
    poison_threshold: int,
    *,
    dead_run: str | None = None,
) -> None:
    """Free what a dead run held (`dead_run`, or every run but `owner`), counting a crash
    for each message; hold and log the messages that crashed too often (POISON)."""
    if dead_run is None:  # at start-up: nothing is receiving into the spool yet
        swept = await repository.sweep_spool()
        if swept:
            log.warning("removed %d spool files no queued message refers to", swept)
    recovery = await repository.recover(owner, poison_threshold, dead_run=dead_run)
    if recovery.released:
        log.warning("resuming %d recipients a dead run was delivering", recovery.released)
    for queue_id in recovery.poisoned:
        log.error("message %s was being delivered in repeated crashes; held", queue_id)
        (message,) = await repository.list_messages(queue_id)
        tracker.record(
            TrackingEvent.POISON,
            queue_id=queue_id,
            sender=message.sender,
            recipients=[r.address for r in message.recipients],
            message_id=message.message_id,
            crashes=message.crashes,
        )
