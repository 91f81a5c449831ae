"""The relay rule: may this client send to this recipient?

Owns: the per-recipient decision at RCPT (local domain, routed domain, trusted network,
authenticated submitter; anyone else is refused relaying).
Public: RelayPolicy, decide_recipient().
Failures: none raised; the decision is a Reply.
Limits: local recipients are matched case-insensitively (ASCII lower-case).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from hubd import replies
from hubd.replies import Reply
from hubd.routing import HopKind, Router
from hubd.smtp.address import Mailbox

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class RelayPolicy:
    """What the relay rule needs to know of the node's configuration."""

    router: Router
    trusted_networks: Sequence[IPNetwork]
    catch_all: bool
    known_recipients: frozenset[str]

    def is_trusted(self, client_ip: str) -> bool:
        """Whether a client address lies in a trusted network."""
        try:
            address = ipaddress.ip_address(client_ip.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self.trusted_networks)


def decide_recipient(
    policy: RelayPolicy, mailbox: Mailbox, *, client_ip: str, authenticated: bool
) -> Reply:
    """Accept or refuse one recipient for this client."""
    hop = policy.router.next_hop(mailbox.domain)
    if hop.kind is HopKind.LOCAL:
        if policy.catch_all or str(mailbox).lower() in policy.known_recipients:
            return replies.RECIPIENT_OK
        return replies.NO_SUCH_USER
    if hop.kind is HopKind.ROUTE or authenticated or policy.is_trusted(client_ip):
        return replies.RECIPIENT_OK
    return replies.RELAY_DENIED
