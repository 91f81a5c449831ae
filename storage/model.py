"""The queue's value types: what goes in, what delivery gets, what comes back out.

Public: RecipientState, NewMessage, NewRecipient, ClaimedRecipient, Claim, RecipientOutcome,
QueuedMessage, QueuedRecipient, ShadowRecord, Settled, FINISHED_STATES, LEFT_STATES.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from storage.spool import SpooledBody, StoredBody


class RecipientState(enum.StrEnum):
    """Where one recipient of a queued message stands."""

    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"
    HELD = "HELD"  # not tried until an operator releases it (poison, or suspended)
    SHADOWED = "SHADOWED"  # handed to a shadow-aware peer; a shadow is held until it discards
    DROPPED = "DROPPED"  # taken over by the upstream node (XQTAKEN), or a duplicate


# A message is finished (and deleted) when every recipient is in one of these...
FINISHED_STATES = (RecipientState.DELIVERED, RecipientState.FAILED, RecipientState.DROPPED)
# ...and has left the node (upstream notice, delayed ack) when every one is in these.
LEFT_STATES = (*FINISHED_STATES, RecipientState.SHADOWED)


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
    upstream: str = ""  # XSHADOW: the peer owed a discard notice, with its incarnation
    upstream_incarnation: str = ""
    # A body too big to hold: `body` is then its head, the spool file the rest.
    spooled: SpooledBody | None = None
    # Shadow before acknowledgement, at the accepting node: not due before this (the copy
    # is being made; released once it is, or withdrawn). None: due at once.
    not_before: float | None = None
    # A redundancy copy of another node's primary: held as a shadow of it, not delivered
    # unless that node dies or loses its queue (docs/xshadow.md, XHOLD).
    held_for: ShadowRecord | None = None

    @property
    def size(self) -> int:
        return len(self.body) + (self.spooled.size if self.spooled is not None else 0)


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
    origin: str
    envid: str
    ret: str
    notify: str
    orcpt: str
    delay_notified: bool
    lease_owner: str  # the delivery run that holds it; only that run may record its outcome
    redirect_to: str | None = None  # host:port an operator sent it to, over routing's choice


@dataclass(frozen=True, slots=True)
class Claim:
    """What one claim leased, with what delivery needs of it from the same transaction."""

    recipients: tuple[ClaimedRecipient, ...] = ()
    # Message row id -> stored bytes, for messages small enough to carry with the claim
    # (bigger ones are read apart, outside the write transaction).
    bodies: Mapping[int, StoredBody] = field(default_factory=dict, repr=False)
    # (origin key, lower-cased recipient) pairs of these messages already delivered at
    # their final hop: the duplicate check, read in the claim's transaction.
    delivered: frozenset[tuple[str, str]] = frozenset()
    # When the earliest unclaimed pending recipient is due, when this claim did not fill up.
    next_due: float | None = None


@dataclass(frozen=True, slots=True)
class RecipientOutcome:
    """The result of one attempt for one claimed recipient."""

    recipient: ClaimedRecipient
    state: RecipientState
    next_hop: str
    reply: str
    next_attempt_at: float | None = None
    delay_notified: bool = False
    shadow: ShadowRecord | None = None  # with state SHADOWED: the peer now holding it
    final: bool = False  # delivered at its final hop: remember (origin, recipient)
    counted: bool = True  # False: not an attempt (the node's own disk was full)


@dataclass(frozen=True, slots=True)
class ShadowRecord:
    """Which peer accepted a message, as which of its queue ids (XSHADOW)."""

    peer_address: str
    peer_name: str
    peer_incarnation: str
    peer_queue_id: str


@dataclass(frozen=True, slots=True)
class Settled:
    """Messages whose last recipient just left the node, and those now deleted."""

    left: tuple[str, ...] = ()
    finished: tuple[str, ...] = ()
    notices: int = 0
    # Shadows dropped on creation by a discard notice that came first (early discards).
    discarded: tuple[ShadowRecord, ...] = ()


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


@dataclass(frozen=True, slots=True)
class HeldShadow:
    """One shadow, for listings and heartbeats."""

    queue_id: str
    peer_address: str
    peer_name: str
    peer_incarnation: str
    peer_queue_id: str
    created_at: float
    recipients: tuple[str, ...]
