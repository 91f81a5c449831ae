"""Carrying out what sessions ask of the node: commits, delayed acks, XSHADOW bookkeeping,
password checks.

Owns: running a session's node actions (hubd/smtp/actions.py) against the intake, the
departures of delayed acknowledgement, the redundancy copies of shadow before
acknowledgement (and their UNPROTECTED events) and the shadow ledger, turning their failures into a
Failed outcome, and knowing which commits are in flight (so shutdown can let them answer).
Public: Executor, Intake.
Failures: none raised but cancellation; a storage fault is logged here and reported Failed.
Limits: a commit runs to its end even when its client vanishes (shielded), so a message
whose commit began is committed whole or not at all, never cut short by a disconnect.
See also: hubd/smtp/session.py (asks), hubd/smtp/server.py (calls run()), hubd/intake.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from hubd.shadow.delayed_ack import Departures
from hubd.shadow.redundancy import CopyResult, Redundancy
from hubd.smtp.actions import (
    AckRefused,
    AwaitDeparture,
    CheckCredentials,
    Commit,
    Committed,
    Copied,
    Departed,
    DropTaken,
    Failed,
    ListNotices,
    MakeRedundant,
    NodeAction,
    NoticesListed,
    Outcome,
    RegisterUpstream,
    TakenDropped,
    UpstreamRegistered,
    Withdraw,
    Withdrawn,
)
from hubd.smtp.credentials import Credentials
from hubd.smtp.message import ReceivedMessage
from hubd.tracking import Tracker, TrackingEvent
from storage.errors import is_disk_full, log_failure
from storage.shadows import AckTooHigh, ShadowLedger

log = logging.getLogger(__name__)

Intake = Callable[[ReceivedMessage], Coroutine[Any, Any, None]]


class Executor:
    """Runs node actions for every session of a node."""

    def __init__(
        self,
        *,
        intake: Intake,
        clock: Callable[[], float],
        departures: Departures | None = None,
        ledger: ShadowLedger | None = None,
        tracker: Tracker | None = None,
        credentials: Credentials | None = None,
        redundancy: Redundancy | None = None,
    ) -> None:
        self._intake = intake
        self._credentials = credentials
        self._clock = clock
        self._departures = departures
        self._ledger = ledger
        self._tracker = tracker
        self._redundancy = redundancy
        self._background: set[asyncio.Task[None]] = set()
        self._commits: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def commits_in_flight(self) -> int:
        return len(self._commits)

    async def run(self, action: NodeAction) -> Outcome:
        """Carry out one action; its outcome for Session.finish()."""
        if isinstance(action, Commit):
            return await self._commit(action)
        if isinstance(action, AwaitDeparture):
            if self._departures is None:
                return Departed(left=False)
            return Departed(await self._departures.wait(action.queue_id, action.limit))
        if isinstance(action, CheckCredentials):
            if self._credentials is None:
                log.error("AUTH on a node with no users file")
                return Failed()
            return await self._credentials.check(action)
        if isinstance(action, MakeRedundant | Withdraw):
            return await self._redundant(action)
        try:
            return await self._shadow(action)
        except Exception as error:
            log_failure(log, "XSHADOW bookkeeping", error)
            return Failed(no_space=is_disk_full(error))

    async def settle(self, grace: float) -> None:
        """Wait (at most `grace` seconds) until no commit is in flight."""
        try:
            async with asyncio.timeout(grace):
                await self._idle.wait()
        except TimeoutError:
            log.warning("%d commits still in flight at shutdown", len(self._commits))

    async def _commit(self, action: Commit) -> Outcome:
        message = action.message
        queue_id = message.queue_id
        watch = self._departures if action.watch_departure else None
        if watch is not None:
            watch.expect(queue_id)
        redundancy = self._redundancy if action.copy_before_ack else None
        if redundancy is not None:
            message = redundancy.prepare(message)
        task = asyncio.create_task(self._intake(message), name=f"commit {queue_id}")
        self._commits.add(task)
        self._idle.clear()
        task.add_done_callback(self._commit_done)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if watch is not None:
                watch.forget(queue_id)
            raise
        except Exception as error:
            if watch is not None:
                watch.forget(queue_id)
            return Failed(no_space=is_disk_full(error))  # logged by _commit_done
        return Committed(message.owed_to)

    async def _redundant(self, action: MakeRedundant | Withdraw) -> Outcome:
        redundancy = self._redundancy
        if redundancy is None:
            raise RuntimeError("before_ack action without a redundancy peer list")
        if isinstance(action, Withdraw):
            try:
                return Withdrawn(await redundancy.withdraw(action.queue_id))
            except Exception as error:
                log_failure(log, f"withdrawing {action.queue_id}", error)
                return Failed(no_space=is_disk_full(error))
        message = action.message
        result = await redundancy.copy(message, action.timeout)
        if result is CopyResult.FAILED and action.required:
            return Copied(made=False)  # withdrawn next: stays not due meanwhile
        if result is CopyResult.FAILED and self._tracker is not None:
            self._tracker.record(
                TrackingEvent.UNPROTECTED,
                queue_id=message.queue_id,
                sender=message.sender,
                recipients=message.recipients,
                message_id=message.message_id,
                reply="no redundancy peer took a copy within before_ack_timeout",
            )
        # Due now; after the 250 (a crash before this only delays it to its not_before).
        self._in_background(redundancy.release(message.queue_id), f"release {message.queue_id}")
        return Copied(made=result is not CopyResult.FAILED)

    def _in_background(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("%s failed", task.get_name(), exc_info=error)

    def _commit_done(self, task: asyncio.Task[None]) -> None:
        self._commits.discard(task)
        if not self._commits:
            self._idle.set()
        if not task.cancelled() and (error := task.exception()) is not None:
            log_failure(log, task.get_name(), error)

    async def _shadow(self, action: RegisterUpstream | ListNotices | DropTaken) -> Outcome:
        ledger = self._ledger
        if ledger is None:
            raise RuntimeError("XSHADOW action without a shadow ledger")
        upstream = action.upstream
        now = self._clock()
        if isinstance(action, RegisterUpstream):
            await ledger.register_upstream(upstream.name, upstream.incarnation, now)
            return UpstreamRegistered()
        if isinstance(action, ListNotices):
            try:
                ids, seq = await ledger.discard_notices(
                    upstream.name, upstream.incarnation, action.ack, action.limit, now
                )
            except AckTooHigh:
                return AckRefused()
            return NoticesListed(tuple(ids), seq)
        dropped, _ = await ledger.drop_taken(
            upstream.name, upstream.incarnation, action.queue_ids, now
        )
        for item in dropped:
            if self._tracker is not None:
                self._tracker.record(
                    TrackingEvent.DUPLICATE,
                    queue_id=item.queue_id,
                    sender=item.sender,
                    recipients=list(item.recipients),
                    reply=f"taken over by {upstream.name}",
                )
        return TakenDropped(len(dropped))
