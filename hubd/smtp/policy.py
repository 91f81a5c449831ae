"""What a listener offers and enforces, as one value handed to each of its sessions.

Owns: the shape of a listener's policy: its name, relay rule, limits, whether it speaks
XSHADOW with peers, whether it offers STARTTLS, whether it is a submission listener (AUTH,
senders bound to users), and whether it delays acknowledgements or copies before them.
Public: ListenerPolicy, ShadowOffer, SubmissionOffer, BeforeAck.
Limits: a listener is relay or submission; peer-only listeners would be one more field.
See also: hubd/smtp/session.py (reads it), hubd/node.py (builds it from the config).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from hubd.shadow.protocol import HOLD_CAPABILITY, VERSION, Hello
from hubd.smtp.limits import SessionLimits
from hubd.smtp.relay import RelayPolicy

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class ShadowOffer:
    """XSHADOW on this listener: who this node is, and who may speak it (`[shadow] peers`)."""

    me: Hello
    peers: Sequence[IPNetwork]

    @property
    def extension(self) -> str:
        """The EHLO keyword line."""
        return f"XSHADOW {VERSION} {HOLD_CAPABILITY}"

    def is_peer(self, client_ip: str) -> bool:
        try:
            address = ipaddress.ip_address(client_ip.split("%", 1)[0])
        except ValueError:
            return False
        return any(address in network for network in self.peers)


@dataclass(frozen=True, slots=True)
class SubmissionOffer:
    """AUTH on this listener, and what it requires: a submission listener (`[submission]`)."""

    plaintext_auth: bool  # AUTH before TLS: allow_plaintext_auth, for loopback tests only
    failure_delay: float  # seconds before a 535
    max_failures: int  # failed AUTHs per client address within failure_window; then 421
    failure_window: float
    max_messages_per_minute_per_user: int


@dataclass(frozen=True, slots=True)
class ListenerPolicy:
    """Everything a session of one listener decides with, besides the node-wide counters."""

    hostname: str
    relay: RelayPolicy
    limits: SessionLimits
    shadow: ShadowOffer | None = None
    max_ack_delay: float | None = None  # delayed acknowledgement; None: answer at commit
    starttls: bool = False  # STARTTLS offered ([tls] is set and TLS is not implicit)
    submission: SubmissionOffer | None = None  # None: a relay listener (no AUTH)
    before_ack: BeforeAck | None = None  # shadow before acknowledgement; supersedes delay


@dataclass(frozen=True, slots=True)
class BeforeAck:
    """`[shadow] before_ack`: copy to a peer before the 250; `required`: else 451 4.4.0."""

    required: bool
    timeout: float
