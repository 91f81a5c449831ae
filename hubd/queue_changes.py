"""The operator's changes to queued messages: retry, suspend, resume, remove, redirect,
flush.

Owns: what each change does to a message (apply_change(), over any Repository: a running
node's own, as its admin API does, or one opened here), committing many messages in
chunks, and opening a stopped node's queue for a change: its data-directory lock first
(so no node starts meanwhile), then the file as it is (never created, migrated or moved
aside).
Public: ACTIONS, CHUNK, apply_change(), removal_dsns(), removal_notices(), select_ids(),
stopped_node_queue(), change_stopped_node(), flush_stopped_node(), NodeRunning.
Failures: NodeRunning (naming the pid) when the node holds its data directory;
StorageError for a missing queue or one of another schema revision.
See also: hubd/cli.py (`hubd queue retry/suspend/resume/remove`), hubd/datadir.py,
hubd/queue_report.py (the reads).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from hubd import replies
from hubd.config import Config
from hubd.datadir import DataDirInUse, acquire_data_dir
from hubd.delivery.courier import RecipientResult
from hubd.delivery.notices import Notifier, notifier_for, returnable
from hubd.delivery.outcomes import Decision
from hubd.errors import HubdError
from hubd.routing import NextHop, Router, RouteTable, hop_of, redirect_hop
from hubd.tracking import TrackingEvent
from storage import (
    ClaimedRecipient,
    NewMessage,
    QueuedMessage,
    RecipientOutcome,
    RecipientState,
    Repository,
    StoredBody,
    Writer,
    attach_database,
    check_revision,
)
from storage.repository import RemovalNotices

ACTIONS = ("retry", "suspend", "resume", "remove", "redirect")
CHUNK = 1000  # messages changed per round of commits: a bulk change never holds the queue long


class NodeRunning(HubdError):
    """The node of this queue is running: a change must go through it, not the file."""

    def __init__(self, data_dir: Path, pid: int | None) -> None:
        holder = f"pid {pid}" if pid is not None else "a process that wrote no pid"
        super().__init__(
            f"the node of {data_dir} is running ({holder}); stop it first to change its"
            " queue from the command line"
        )
        self.pid = pid


def removal_dsns(notifier: Notifier, router: Router, now: float) -> RemovalNotices:
    """Failure DSNs for the waiting recipients of a removed message, as delivery would send
    them (NOTIFY honoured; mail from <> goes to double_bounce_to or is dropped aloud)."""
    reply = replies.REMOVED_BY_OPERATOR
    text = f"{reply.enhanced} {reply.text}"

    def build(waiting: Sequence[ClaimedRecipient], body: StoredBody) -> list[NewMessage]:
        first = waiting[0]
        hop = hop_of(router, first.address, first.redirect_to)
        results = [RecipientResult(r, reply.code, text) for r in waiting]
        decisions = [
            Decision(
                RecipientOutcome(r.recipient, RecipientState.FAILED, hop.key, r.reply),
                TrackingEvent.FAIL,
            )
            for r in results
        ]
        notices = notifier.notices(
            hop=hop,
            first=first,
            body=returnable(body),
            results=results,
            decisions=decisions,
            now=now,
        )
        return [notice.message for notice in notices]

    return build


def removal_notices(config: Config, repository: Repository, now: float) -> RemovalNotices:
    """The failure DSNs a removal owes, built as the node's own delivery would build them
    (its routes, its incarnation): the same for a stopped node's file and a running node's
    API."""
    router = Router(config.local_domains, RouteTable(config.routes))
    notifier = notifier_for(config, router, repository.database.incarnation, random.Random())
    return removal_dsns(notifier, router, now)


async def _one(
    repository: Repository,
    action: str,
    queue_id: str,
    now: float,
    *,
    notices: RemovalNotices | None,
    to: NextHop | None,
) -> int:
    """Change one message; how many of its recipients (remove: 1 or 0 messages) changed."""
    if action == "suspend":
        return await repository.hold(queue_id)
    if action in ("retry", "resume"):
        return await repository.release(queue_id, now)
    if action == "remove":
        return int(await repository.remove(queue_id, now, notices))
    if action == "redirect" and to is not None:
        return await repository.redirect(queue_id, to.name, to.key, now)
    raise ValueError(f"unknown queue action {action!r}")


async def apply_change(
    repository: Repository,
    action: str,
    queue_ids: Sequence[str],
    now: float,
    *,
    notices: RemovalNotices | None = None,
    to: str | None = None,
) -> dict[str, int]:
    """Apply `action` to each message; what changed per queue id (0: nothing to change).
    A redirect sends the waiting recipients to `to` (host:port; ValueError if it is not).

    At most CHUNK messages are in the writer at a time; it groups them into transactions
    of its own batch size, so a change of a whole queue commits in steps, not at once.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown queue action {action!r}")
    if (action == "redirect") != (to is not None):
        raise ValueError("a redirect, and only a redirect, names where to (--to HOST:PORT)")
    target = redirect_hop(to) if to is not None else None
    changed: dict[str, int] = {}
    unique = list(dict.fromkeys(queue_ids))
    for start in range(0, len(unique), CHUNK):
        chunk = unique[start : start + CHUNK]
        counts = await asyncio.gather(
            *(_one(repository, action, q, now, notices=notices, to=target) for q in chunk)
        )
        changed.update(zip(chunk, counts, strict=True))
    return changed


@contextlib.asynccontextmanager
async def stopped_node_queue(data_dir: Path) -> AsyncIterator[Repository]:
    """The queue of a node that is not running, held under its data-directory lock.

    Checked before anything is touched: a directory with no queue gets StorageError and
    stays as it was (no lock file made); a running node's gets NodeRunning.
    """
    database = data_dir / "queue.db"
    check_revision(database)
    try:
        lock = acquire_data_dir(data_dir, wait_for_dead=0)
    except DataDirInUse as error:
        raise NodeRunning(data_dir, error.pid) from None
    with lock:
        opened = await attach_database(database)
        writer = Writer(opened.write_engine, lock=opened.write_lock)
        writer.start()
        try:
            yield Repository(opened, writer)
        finally:
            await writer.stop()
            await opened.close()


def select_ids(
    messages: Sequence[QueuedMessage], *, hop: str | None = None, every: bool = False
) -> list[str]:
    """The queue ids `ALL` (`every`) or `--hop H` stand for: every message, or each with a
    recipient waiting for next hop H (the whole message is changed)."""
    return [m.queue_id for m in messages if every or any(r.next_hop == hop for r in m.recipients)]


async def flush_stopped_node(data_dir: Path, *, now: float, hop: str | None = None) -> int:
    """A stopped node's deferred recipients (of `hop`, or all) due now, under its lock: its
    next start tries them at once; how many."""
    async with stopped_node_queue(data_dir) as repository:
        return await repository.make_due(now, hop)


async def change_stopped_node(
    data_dir: Path,
    action: str,
    queue_ids: Sequence[str],
    *,
    now: float,
    hop: str | None = None,
    every: bool = False,
    dsn_for: Config | None = None,
    to: str | None = None,
) -> dict[str, int]:
    """Apply `action` to the named messages (and those `hop` or `every` select) of a
    stopped node's queue, under its lock; what changed per queue id. With `dsn_for` (the
    node's config), a removal queues the failure DSNs its waiting recipients are owed."""
    async with stopped_node_queue(data_dir) as repository:
        wanted = list(queue_ids)
        if hop is not None or every:
            wanted += select_ids(await repository.list_messages(), hop=hop, every=every)
        notices = None if dsn_for is None else removal_notices(dsn_for, repository, now)
        return await apply_change(repository, action, wanted, now, notices=notices, to=to)
