"""The queue's value types: what goes in, what delivery gets, what comes back out.

Public: RecipientState, NewMessage, NewRecipient, ClaimedRecipient, RecipientOutcome,
QueuedMessage, QueuedRecipient, DONE_STATES.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass


class RecipientState(enum.StrEnum):
    """Where one recipient of a queued message stands."""

    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"
    HELD = "HELD"  # not tried until an operator releases it (poison, or suspended)


DONE_STATES = (RecipientState.DELIVERED, RecipientState.FAILED)


@dataclass(frozen=True, slots=True)
class NewRecipient:
    address: str
    next_hop: str
    notify: str = ""
    orcpt: str = ""


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message as received, ready to be committed."""

    queue_id: str
    sender: str
    recipients: Sequence[NewRecipient]
    body: bytes
    received_at: float
    message_id: str | None
    origin: str
    client: str
    envid: str = ""
    ret: str = ""


@dataclass(frozen=True, slots=True)
class ClaimedRecipient:
    """A recipient handed to this delivery run, with what delivery needs of its message."""

    recipient_id: int
    address: str
    attempts: int
    message: int
    queue_id: str
    sender: str
    received_at: float
    size: int
    message_id: str | None
    envid: str
    ret: str
    notify: str
    orcpt: str
    delay_notified: bool


@dataclass(frozen=True, slots=True)
class RecipientOutcome:
    """The result of one attempt for one recipient."""

    recipient_id: int
    state: RecipientState
    next_hop: str
    reply: str
    next_attempt_at: float | None = None
    delay_notified: bool = False


@dataclass(frozen=True, slots=True)
class QueuedRecipient:
    address: str
    state: RecipientState
    next_hop: str
    attempts: int
    next_attempt_at: float
    last_error: str


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    queue_id: str
    sender: str
    received_at: float
    size: int
    message_id: str | None
    origin: str
    client: str
    crashes: int
    recipients: tuple[QueuedRecipient, ...]
