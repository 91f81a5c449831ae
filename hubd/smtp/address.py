"""Parsing and checking envelope addresses from MAIL FROM, RCPT TO and VRFY.

Owns: splitting a path from the parameters after it, and what an acceptable envelope
address is (RFC 5321 4.1.2 and 4.5.3.1 limits).
Public: Mailbox, split_path(), parse_mailbox().
Failures: none raised; None for a path or address hubd will not accept.
Limits: quoted local parts are accepted as given; no IDNA conversion of domains; a source
route (`<@a,@b:user@c>`) is dropped, as RFC 5321 appendix C says servers should.
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


def split_path(argument: str) -> tuple[str, str] | None:
    """Split `<path> params` into the address inside the brackets and the parameter text.

    A path without angle brackets is its first word (clients do send `MAIL FROM:a@b`).
    None when there is no path, the brackets or quotes do not close, or text follows the
    path unspaced.
    """
    text = argument.lstrip(" ")
    if not text.startswith("<"):
        path, _, rest = text.partition(" ")
        return (path, rest) if path else None
    end = _closing_bracket(text)
    if end is None or not (end + 1 == len(text) or text[end + 1] == " "):
        return None
    path = text[1:end]
    if path.startswith("@"):  # a source route, A-d-l ":" mailbox
        _, colon, path = path.partition(":")
        if not colon:
            return None
    return path, text[end + 1 :]


def _closing_bracket(text: str) -> int | None:
    # The ">" that ends a path starting at text[0] == "<", skipping quoted strings.
    quoted = escaped = False
    for index in range(1, len(text)):
        char = text[index]
        if escaped:
            escaped = False
        elif quoted:
            quoted = char != '"'
            escaped = char == "\\"
        elif char == '"':
            quoted = True
        elif char == ">":
            return index
        elif char == "<":
            return None
    return None


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
