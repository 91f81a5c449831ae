"""What a courier is: something that takes one message to one next hop.

Owns: the job handed to a courier and the per-recipient result it gives back.
Public: Courier (Protocol), DeliveryJob, RecipientResult.
Limits: a courier never raises for a delivery failure; it returns a result per recipient
(transient: 4xx, permanent: 5xx), as chasquid's couriers say whether an error is permanent.
See also: delivery/maildir.py, delivery/smtp_client.py, delivery/scheduler.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from hubd.routing import NextHop
from storage import ClaimedRecipient, ShadowRecord, StoredBody


@dataclass(frozen=True, slots=True)
class DeliveryJob:
    """One message's recipients that share a next hop, with the message's bytes."""

    next_hop: NextHop
    queue_id: str
    sender: str
    received_at: float
    message_id: str | None
    body: StoredBody
    recipients: Sequence[ClaimedRecipient]
    origin: str = ""


@dataclass(frozen=True, slots=True)
class RecipientResult:
    """How one recipient's attempt ended: the (remote or local) reply and who gave it."""

    recipient: ClaimedRecipient
    code: int
    text: str
    remote: str = ""
    # True when no host of the next hop could be used at all (refused, 421, timeout): the
    # whole next hop is down, not just this message.
    hop_down: bool = False
    # XSHADOW: the peer that took the message and now holds it (we keep a shadow), or
    # `final` when the message reached a hop that ends our responsibility (Maildir, or an
    # MTA that is not a hubd peer), so its origin key is remembered for duplicates.
    shadow: ShadowRecord | None = None
    final: bool = False
    duplicate: bool = False  # dropped: this origin key already reached this recipient
    no_space: bool = False  # our own disk was full: no attempt at all, tried again soon

    @property
    def delivered(self) -> bool:
        return 200 <= self.code < 300

    @property
    def transient(self) -> bool:
        return not 500 <= self.code < 600 and not self.delivered

    @property
    def reply(self) -> str:
        return f"{self.code} {self.text}"


class Courier(Protocol):
    """Takes a job to its next hop and reports each recipient's result."""

    async def deliver(self, job: DeliveryJob) -> list[RecipientResult]: ...
