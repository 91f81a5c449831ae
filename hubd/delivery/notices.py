"""Deciding which DSNs an attempt's results call for, and making them queueable messages.

Owns: failure, delay and success notices for one job's results (RFC 3461 NOTIFY honoured,
never a notice to the null sender, one notice per kind per job), marking recipients whose
delay warning has gone out, and double bounces (as Postfix does): mail from <> that fails
goes as a notice to `queue.double_bounce_to`; a double bounce that fails itself, or that
has nowhere to go, is dropped with a DOUBLE_BOUNCE tracking line and a warning.
Public: Notifier, Notice, notifier_for(), returnable().
Limits: the DOUBLE_BOUNCE line is written when the failure is decided, just before it is
committed; a commit that fails retries the recipient and may write it again.
See also: hubd/dsn.py (the DSN text), delivery/scheduler.py (queues them with the outcomes).
"""

from __future__ import annotations

import logging
import random
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hubd.config import Config
from hubd.delivery.courier import RecipientResult
from hubd.delivery.outcomes import Decision
from hubd.dsn import MAX_RETURNED_BYTES, Action, DsnRecipient, DsnReport, build_dsn, wants_notice
from hubd.queueid import new_queue_id
from hubd.routing import HopKind, NextHop, Router
from hubd.tracking import Tracker, TrackingEvent
from storage import ClaimedRecipient, NewMessage, NewRecipient, RecipientState, StoredBody

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Notice:
    """A DSN ready to commit with the outcomes that caused it."""

    message: NewMessage
    kind: str  # "failure", "delay", "success", "double-bounce"
    recipients: tuple[str, ...]


def returnable(body: StoredBody | None) -> bytes:
    """What a DSN may return of the message: all of a small one, the start of a big one."""
    if body is None:
        return b""
    if body.spool is None:
        return body.head
    return body.prefix(MAX_RETURNED_BYTES + 1)


def notifier_for(
    config: Config,
    router: Router,
    incarnation: str,
    rng: random.Random,
    tracker: Tracker | None = None,
) -> Notifier:
    """The DSN builder of the node `config` describes, for its queue's `incarnation`."""
    return Notifier(
        hostname=config.node.hostname,
        router=router,
        origin_prefix=f"{config.node.name}.{incarnation}",
        delay_notice=config.queue.delay_notice.total_seconds(),
        expiry=config.queue.expiry.total_seconds(),
        rng=rng,
        double_bounce_to=config.double_bounce_address,
        tracker=tracker,
    )


def _remote_host(remote: str) -> str:
    host, sep, port = remote.rpartition(":")
    return host.strip("[]") if sep and port.isdigit() else remote


class Notifier:
    """Builds the DSNs of one node."""

    def __init__(
        self,
        *,
        hostname: str,
        router: Router,
        origin_prefix: str,
        delay_notice: float,
        expiry: float,
        rng: random.Random,
        double_bounce_to: str = "",
        tracker: Tracker | None = None,
    ) -> None:
        self._double_bounce_to = double_bounce_to
        self._tracker = tracker
        self._hostname = hostname
        self._router = router
        self._origin_prefix = origin_prefix
        self._delay_notice = delay_notice
        self._expiry = expiry
        self._rng = rng

    def delay_due(self, recipient: ClaimedRecipient, now: float) -> bool:
        """Whether a deferred recipient's delay warning should go out now."""
        return (
            not recipient.delay_notified
            and now - recipient.received_at >= self._delay_notice
            and wants_notice(recipient.notify, "DELAY")
        )

    def notices(
        self,
        *,
        hop: NextHop,
        first: ClaimedRecipient,
        body: bytes,
        results: Sequence[RecipientResult],
        decisions: Sequence[Decision],
        now: float,
    ) -> list[Notice]:
        """The DSNs this job's results call for (for the null sender: double bounces only)."""
        if not first.sender:
            return self._double_bounces(hop, first, body, zip(results, decisions, strict=True), now)
        final: list[DsnRecipient] = []
        delayed: list[DsnRecipient] = []
        for result, decision in zip(results, decisions, strict=True):
            entry = self._entry(hop, result, decision)
            if entry is None:
                continue
            (delayed if entry.action == "delayed" else final).append(entry)
        out = []
        if final:
            kind = "failure" if any(e.action == "failed" for e in final) else "success"
            out.append(self._notice(kind, first, body, final, now, to=first.sender))
        if delayed:
            out.append(self._notice("delay", first, body, delayed, now, to=first.sender))
        return out

    def _double_bounces(
        self,
        hop: NextHop,
        first: ClaimedRecipient,
        body: bytes,
        outcomes: Iterable[tuple[RecipientResult, Decision]],
        now: float,
    ) -> list[Notice]:
        """Failed mail from <>: a notice to double_bounce_to, or dropped out loud."""
        to = self._double_bounce_to
        onward: list[DsnRecipient] = []
        for result, decision in outcomes:
            if decision.outcome.state is not RecipientState.FAILED:
                continue
            address = result.recipient.address
            if not to or address.lower() == to.lower():
                self._drop(first, address, decision.outcome.reply, to)
                continue
            remote = _remote_host(result.remote) if hop.kind is not HopKind.LOCAL else ""
            onward.append(
                DsnRecipient(
                    address, "failed", decision.outcome.reply, remote, result.recipient.orcpt
                )
            )
        if not onward:
            return []
        return [self._notice("double-bounce", first, body, onward, now, to=to)]

    def _drop(self, first: ClaimedRecipient, address: str, reply: str, to: str) -> None:
        why = "it was the double bounce itself" if to else "queue.double_bounce_to is empty"
        log.warning(
            "double bounce dropped: message %s from <> to %s failed (%s) and %s",
            first.queue_id,
            address,
            reply,
            why,
        )
        if self._tracker is not None:
            self._tracker.record(
                TrackingEvent.DOUBLE_BOUNCE,
                queue_id=first.queue_id,
                sender=first.sender,
                recipients=[address],
                message_id=first.message_id,
                reply=reply,
                size=first.size,
                dropped=why,
            )

    def _entry(
        self, hop: NextHop, result: RecipientResult, decision: Decision
    ) -> DsnRecipient | None:
        recipient = result.recipient
        outcome = decision.outcome
        remote = _remote_host(result.remote) if hop.kind is not HopKind.LOCAL else ""
        action: Action
        if outcome.state is RecipientState.FAILED and wants_notice(recipient.notify, "FAILURE"):
            action = "failed"
        elif outcome.delay_notified:
            action = "delayed"
        elif outcome.state in (RecipientState.DELIVERED, RecipientState.SHADOWED) and wants_notice(
            recipient.notify, "SUCCESS"
        ):
            action = "delivered" if hop.kind is HopKind.LOCAL else "relayed"
        else:
            return None
        return DsnRecipient(recipient.address, action, outcome.reply, remote, recipient.orcpt)

    def _notice(
        self,
        kind: str,
        first: ClaimedRecipient,
        body: bytes,
        entries: list[DsnRecipient],
        now: float,
        *,
        to: str,
    ) -> Notice:
        queue_id = new_queue_id(now, self._rng)
        moment = datetime.fromtimestamp(now, UTC)
        arrival = datetime.fromtimestamp(first.received_at, UTC)
        report = DsnReport(
            reporting_mta=self._hostname,
            sender=to,
            queue_id=first.queue_id,
            arrival=arrival,
            now=moment,
            original=body,
            recipients=entries,
            message_id=f"<{queue_id}.dsn@{self._hostname}>",
            boundary=f"{queue_id}.{secrets.token_hex(6)}/{self._hostname}",
            envid=first.envid,
            ret=first.ret,
            retry_until=arrival + timedelta(seconds=self._expiry),
            double_bounce=kind == "double-bounce",
        )
        hop = self._router.next_hop(to.rpartition("@")[2])
        message = NewMessage(
            queue_id=queue_id,
            sender="",
            recipients=[NewRecipient(to, hop.key)],
            body=build_dsn(report),
            received_at=now,
            message_id=report.message_id,
            origin=f"{self._origin_prefix}.{queue_id}",
            client="(local DSN)",
        )
        return Notice(message, kind, tuple(e.address for e in entries))
