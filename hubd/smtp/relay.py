"""The relay rule: may this client send to this recipient?

Owns: the per-recipient decision at RCPT (local domain, routed domain, trusted network,
authenticated submitter; anyone else is refused relaying), and the open-relay tricks:
a client that may not relay gets no local part holding routing characters (`%` hack,
`!` bang paths, a quoted `@`), which some next hop could still read as a relay request.
Public: RelayPolicy, decide_recipient(), postmaster().
Failures: none raised; the decision is a Reply.
Limits: local recipients are matched case-insensitively (ASCII lower-case); `postmaster`
exists at every local domain, catch_all or not (RFC 5321 4.5.1).
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
_ROUTING_CHARACTERS = frozenset("%!@")


@dataclass(frozen=True, slots=True)
class RelayPolicy:
    """What the relay rule needs to know of the node's configuration."""

    router: Router
    trusted_networks: Sequence[IPNetwork]
    catch_all: bool
    known_recipients: frozenset[str]
    postmaster_domain: str | None = None  # where RCPT TO:<postmaster> goes: a local domain

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
    may_relay = authenticated or policy.is_trusted(client_ip)
    if not may_relay and _ROUTING_CHARACTERS & set(mailbox.local_part):
        return replies.RELAY_DENIED
    hop = policy.router.next_hop(mailbox.domain)
    if hop.kind is HopKind.LOCAL:
        known = str(mailbox).lower() in policy.known_recipients
        if policy.catch_all or known or mailbox.local_part.lower() == "postmaster":
            return replies.RECIPIENT_OK
        return replies.NO_SUCH_USER
    if hop.kind is HopKind.ROUTE or may_relay:
        return replies.RECIPIENT_OK
    return replies.RELAY_DENIED


def postmaster(policy: RelayPolicy) -> Mailbox | None:
    """The mailbox `RCPT TO:<postmaster>` (no domain) means, if the node has local domains."""
    if policy.postmaster_domain is None:
        return None
    return Mailbox("postmaster", policy.postmaster_domain)
