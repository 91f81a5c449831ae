"""Committing a received message: the queue rows, the RECEIVE line, the scheduler's wake-up.

Owns: the step between "DATA is complete" and "250 queued": categorise each recipient, make a
spooled body durable, commit message and envelope in one (grouped) transaction, then log and
wake delivery.
Public: Intake.
Failures: a storage error propagates to the session, which answers 451 4.3.0.
See also: hubd/smtp/executor.py (the caller), storage/repository.py (enqueue).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from hubd.routing import Router
from hubd.smtp.message import ReceivedMessage
from hubd.smtp.params import RcptParams
from hubd.smtp.spooling import SpooledContent
from hubd.tracking import Tracker, TrackingEvent
from storage import NewMessage, NewRecipient, Repository, ShadowRecord, SpooledBody


class Intake:
    """Commits received messages for one node."""

    def __init__(
        self,
        *,
        repository: Repository,
        router: Router,
        tracker: Tracker,
        origin_prefix: str,
        on_commit: Callable[[Iterable[str]], None],
    ) -> None:
        self._repository = repository
        self._router = router
        self._tracker = tracker
        self._origin_prefix = origin_prefix
        self._on_commit = on_commit

    async def __call__(self, message: ReceivedMessage) -> None:
        params = message.rcpt_params or tuple(RcptParams() for _ in message.recipients)
        recipients = [
            NewRecipient(
                address,
                self._router.next_hop(address.rpartition("@")[2]).key,
                notify=rcpt.notify,
                orcpt=rcpt.orcpt,
            )
            for address, rcpt in zip(message.recipients, params, strict=True)
        ]
        content = message.content
        spooled = None
        if isinstance(content, SpooledContent):
            # Durable (file and directory fsynced) before the commit that refers to it.
            spooled = await asyncio.to_thread(content.file.keep, message.queue_id)
            body = message.trace
        else:
            body = message.trace + content
        try:
            await self._enqueue(message, recipients, body, spooled)
        except BaseException:
            if spooled is not None:
                self._repository.database.spool.unlink([spooled.name])
            raise
        self._tracker.record(
            TrackingEvent.RECEIVE,
            queue_id=message.queue_id,
            sender=message.sender,
            recipients=message.recipients,
            message_id=message.message_id,
            size=message.size,
            client=message.client_ip,
        )
        self._on_commit(r.next_hop for r in recipients)

    async def _enqueue(
        self,
        message: ReceivedMessage,
        recipients: list[NewRecipient],
        body: bytes,
        spooled: SpooledBody | None,
    ) -> None:
        # The XSHADOW sender, or else the redundancy peer expected to hold the copy.
        upstream = message.upstream or message.owed_to
        held_for = None
        if message.mail_params.hold and upstream is not None:
            # A redundancy copy: held as a shadow of the sender's primary, which owes this
            # node a discard notice (not the other way round).
            held_for = ShadowRecord(
                message.mail_params.hold,
                upstream.name,
                upstream.incarnation,
                message.mail_params.origin.rpartition(".")[2],
            )
            upstream = None
        await self._repository.enqueue(
            NewMessage(
                queue_id=message.queue_id,
                sender=message.sender,
                recipients=recipients,
                body=body,
                spooled=spooled,
                received_at=message.received_at,
                message_id=message.message_id,
                # A peer's XORIGIN is kept unchanged by every hop and by resubmission.
                origin=message.mail_params.origin or f"{self._origin_prefix}.{message.queue_id}",
                client=f"{message.helo} [{message.client_ip}]",
                envid=message.mail_params.envid,
                ret=message.mail_params.ret,
                upstream=upstream.name if upstream else "",
                upstream_incarnation=upstream.incarnation if upstream else "",
                not_before=message.not_before,
                held_for=held_for,
            )
        )
