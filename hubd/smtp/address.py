"""Parsing and checking envelope addresses from MAIL FROM and RCPT TO.

Owns: what an acceptable envelope address is (RFC 5321 4.1.2 and 4.5.3.1 limits).
Public: Mailbox, parse_mailbox().
Failures: none raised; parse_mailbox() returns None for an address hubd will not accept.
Limits: quoted local parts are accepted as given; no IDNA conversion of domains.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_ADDRESS_LENGTH = 254  # RFC 5321 4.5.3.1.3 path (256) less the angle brackets
MAX_LOCAL_PART = 64  # RFC 5321 4.5.3.1.1
_CONTROL = re.compile(r"[\x00-\x1f\x7f\s]")
_DOMAIN_LABEL = re.compile(r"^[^\s.@\[\]]+$")
_ADDRESS_LITERAL = re.compile(r"^\[[0-9A-Fa-f:.]+\]$|^\[IPv6:[0-9A-Fa-f:.]+\]$")


@dataclass(frozen=True, slots=True)
class Mailbox:
    """An envelope address split at its last @; the domain is lower-cased."""

    local_part: str
    domain: str

    def __str__(self) -> str:
        return f"{self.local_part}@{self.domain}"


def _valid_domain(domain: str) -> bool:
    if _ADDRESS_LITERAL.match(domain):
        return True
    labels = domain.rstrip(".").split(".")
    return len(domain) <= 253 and all(_DOMAIN_LABEL.match(label) for label in labels)


def parse_mailbox(address: str) -> Mailbox | None:
    """Split and check an envelope address; None when it is malformed or too long."""
    if not address or len(address.encode("utf-8", "surrogateescape")) > MAX_ADDRESS_LENGTH:
        return None
    if _CONTROL.search(address):
        return None
    try:
        address.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes arrive as surrogate escapes
        return None
    local_part, at, domain = address.rpartition("@")
    if not at or not local_part or not domain:
        return None
    if len(local_part.encode("utf-8")) > MAX_LOCAL_PART or not _valid_domain(domain):
        return None
    return Mailbox(local_part, domain.lower().rstrip("."))
