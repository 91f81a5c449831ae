"""What a session asks its caller to do, and what the caller reports back.

Owns: the action values a Session returns (read DATA, commit, wait for a departure, the
XSHADOW bookkeeping, the redundancy copy before the 250, close) and the outcome values fed
back to Session.finish().
Public: Step, the Action and Outcome types below.
Limits: part 2 of issue 10 adds StartTls and CheckCredentials beside these.
See also: hubd/smtp/session.py (makes them), hubd/smtp/executor.py and
hubd/smtp/server.py (carry them out).
"""

from __future__ import annotations

from dataclasses import dataclass

from hubd.replies import Reply
from hubd.shadow.protocol import Hello
from hubd.smtp.data import ContentLimits, DataSummary
from hubd.smtp.message import ReceivedMessage
from hubd.smtp.spooling import Content


@dataclass(frozen=True, slots=True)
class ReceiveData:
    """Read the message text after the 354; report DataReceived."""

    limits: ContentLimits


@dataclass(frozen=True, slots=True)
class Commit:
    """Commit the message durably; report Committed or Failed."""

    message: ReceivedMessage
    watch_departure: bool  # delayed ack: start watching before the commit, so none is missed
    copy_before_ack: bool = False  # MakeRedundant follows: owe the expected peer a notice


@dataclass(frozen=True, slots=True)
class AwaitDeparture:
    """Wait until the message has left the node, at most `limit` seconds; report Departed."""

    queue_id: str
    limit: float


@dataclass(frozen=True, slots=True)
class RegisterUpstream:
    """Record the XSHADOW upstream of this session; report UpstreamRegistered."""

    upstream: Hello


@dataclass(frozen=True, slots=True)
class ListNotices:
    """Forget the notices up to `ack`, list at most `limit` more; NoticesListed or AckRefused."""

    upstream: Hello
    limit: int
    ack: int | None


@dataclass(frozen=True, slots=True)
class DropTaken:
    """Drop the messages the upstream took over, logged DUPLICATE; report TakenDropped."""

    upstream: Hello
    queue_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MakeRedundant:
    """Copy the committed message to a redundancy peer within `timeout`; report Copied."""

    message: ReceivedMessage
    required: bool  # before_ack = "require": a failure is followed by Withdraw
    timeout: float


@dataclass(frozen=True, slots=True)
class Withdraw:
    """Delete a committed message that could not be made redundant; report Withdrawn."""

    queue_id: str


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection, after sending the step's reply."""


NodeAction = (
    Commit | AwaitDeparture | RegisterUpstream | ListNotices | DropTaken | MakeRedundant | Withdraw
)
Action = ReceiveData | Close | NodeAction


@dataclass(frozen=True, slots=True)
class DataReceived:
    summary: DataSummary
    content: Content  # what the reader kept (held, or in a spool file); empty after a fault


@dataclass(frozen=True, slots=True)
class Committed:
    # The redundancy peer the commit owes a discard notice to (shadow before ack), if any.
    owed_to: Hello | None = None


@dataclass(frozen=True, slots=True)
class Departed:
    left: bool  # False: max_ack_delay passed first


@dataclass(frozen=True, slots=True)
class UpstreamRegistered:
    pass


@dataclass(frozen=True, slots=True)
class NoticesListed:
    queue_ids: tuple[str, ...]
    seq: int


@dataclass(frozen=True, slots=True)
class AckRefused:
    pass


@dataclass(frozen=True, slots=True)
class TakenDropped:
    count: int


@dataclass(frozen=True, slots=True)
class Copied:
    made: bool  # False: no peer took the copy in time


@dataclass(frozen=True, slots=True)
class Withdrawn:
    done: bool  # False: part of it was already being delivered, so it stays


@dataclass(frozen=True, slots=True)
class Failed:
    """The action could not be carried out (a storage fault); logged where it happened."""


Outcome = (
    DataReceived
    | Committed
    | Departed
    | UpstreamRegistered
    | NoticesListed
    | AckRefused
    | TakenDropped
    | Copied
    | Withdrawn
    | Failed
)


@dataclass(frozen=True, slots=True)
class Step:
    """What to do next: send `reply` (if any), then carry out `action` (if any)."""

    reply: Reply | None = None
    action: Action | None = None
