"""What a session asks its caller to do, and what the caller reports back.

Owns: the action values a Session returns (read DATA, commit, wait for a departure, the
XSHADOW bookkeeping, start TLS, check credentials, the redundancy copy before the 250,
close) and the outcome values fed back to Session.finish().
Public: Step, the Action and Outcome types below.
See also: hubd/smtp/session.py (makes them), hubd/smtp/executor.py and
hubd/smtp/server.py (carry them out).
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
class StartTls:
    """Run the TLS handshake (after the 220 to STARTTLS); report TlsStarted."""


@dataclass(frozen=True, slots=True)
class CheckCredentials:
    """Check a submission user's password, off the event loop; report Authenticated,
    NotAuthenticated (after `failure_delay`) or AuthBusy."""

    username: str
    password: str = field(repr=False)
    failure_delay: float


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
    Commit
    | AwaitDeparture
    | RegisterUpstream
    | ListNotices
    | DropTaken
    | CheckCredentials
    | MakeRedundant
    | Withdraw
)
Action = ReceiveData | StartTls | Close | NodeAction


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
class TlsStarted:
    version: str  # "TLSv1.3"


@dataclass(frozen=True, slots=True)
class Authenticated:
    user: str
    addresses: frozenset[str]  # lower-case: the envelope senders it may use


@dataclass(frozen=True, slots=True)
class NotAuthenticated:
    """No such user, or the wrong password (the two are not told apart)."""


@dataclass(frozen=True, slots=True)
class AuthBusy:
    """Too many password checks are waiting: try again later."""


@dataclass(frozen=True, slots=True)
class Copied:
    made: bool  # False: no peer took the copy in time


@dataclass(frozen=True, slots=True)
class Withdrawn:
    done: bool  # False: part of it was already being delivered, so it stays


@dataclass(frozen=True, slots=True)
class Failed:
    """The action could not be carried out (a storage fault); logged where it happened."""

    no_space: bool = False  # the disk is full: the client hears 452 4.3.1, not 451 4.3.0


Outcome = (
    DataReceived
    | Committed
    | Departed
    | UpstreamRegistered
    | NoticesListed
    | AckRefused
    | TakenDropped
    | TlsStarted
    | Authenticated
    | NotAuthenticated
    | AuthBusy
    | Copied
    | Withdrawn
    | Failed
)


@dataclass(frozen=True, slots=True)
class Step:
    """What to do next: send `reply` (if any), then carry out `action` (if any)."""

    reply: Reply | None = None
    action: Action | None = None
