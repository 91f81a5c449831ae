"""Deciding which DSNs an attempt's results call for, and making them queueable messages.

Owns: failure, delay and success notices for one job's results (RFC 3461 NOTIFY honoured,
never a notice to the null sender, one notice per kind per job), and marking recipients
whose delay warning has gone out.
Public: Notifier, Notice.
See also: hubd/dsn.py (the DSN text), delivery/scheduler.py (queues them with the outcomes).
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hubd.delivery.courier import RecipientResult
from hubd.delivery.outcomes import Decision
from hubd.dsn import Action, DsnRecipient, DsnReport, build_dsn, wants_notice
from hubd.queueid import new_queue_id
from hubd.routing import HopKind, NextHop, Router
from storage import ClaimedRecipient, NewMessage, NewRecipient, RecipientState


@dataclass(frozen=True, slots=True)
class Notice:
    """A DSN ready to commit with the outcomes that caused it."""

    message: NewMessage
    kind: str  # "failure", "delay", "success"
    recipients: tuple[str, ...]


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
    ) -> None:
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
        """The DSNs this job's results call for (none for the null sender)."""
        if not first.sender:
            return []
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
            out.append(self._notice(kind, first, body, final, now))
        if delayed:
            out.append(self._notice("delay", first, body, delayed, now))
        return out

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
    ) -> Notice:
        queue_id = new_queue_id(now, self._rng)
        moment = datetime.fromtimestamp(now, UTC)
        arrival = datetime.fromtimestamp(first.received_at, UTC)
        report = DsnReport(
            reporting_mta=self._hostname,
            sender=first.sender,
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
        )
        hop = self._router.next_hop(first.sender.rpartition("@")[2])
        message = NewMessage(
            queue_id=queue_id,
            sender="",
            recipients=[NewRecipient(first.sender, hop.key)],
            body=build_dsn(report),
            received_at=now,
            message_id=report.message_id,
            origin=f"{self._origin_prefix}.{queue_id}",
            client="(local DSN)",
        )
        return Notice(message, kind, tuple(e.address for e in entries))
