"""The XSHADOW wire format: arguments and replies of XSHADOW, XQDISCARD, XQTAKEN, XORIGIN, XHOLD.

Owns: parsing every XSHADOW verb and reply, as plain functions over strings (D's replies
are built in hubd/replies.py, beside every other reply).
Public: VERSION, Hello, parse_hello(), parse_hello_reply(), parse_discard(),
parse_discard_reply(), parse_taken(), parse_hold(), valid_origin(), parse_queued_reply(),
HOLD_CAPABILITY.
Failures: none raised; a malformed input gives None.
See also: docs/xshadow.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

VERSION = 1
# Said after the version in EHLO ("XSHADOW 1 HOLD"): this node holds redundancy copies
# (MAIL ... XHOLD=); an XSHADOW 1 node without it is simply never sent one.
HOLD_CAPABILITY = "HOLD"
MAX_TAKEN_PER_COMMAND = 50  # keeps XQTAKEN within the 512-byte command line

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}\Z")
_INCARNATION = re.compile(r"^[0-9a-f]{16}\Z")
_QUEUE_ID = re.compile(r"^[0-9A-Za-z]{1,40}\Z")
_ORIGIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}\.[0-9a-f]{16}\.[0-9A-Za-z]{1,40}\Z")


@dataclass(frozen=True, slots=True)
class Hello:
    """Who a node is, as XSHADOW says it: its name and its queue's incarnation."""

    name: str
    incarnation: str

    @property
    def origin_prefix(self) -> str:
        """What this node's origin keys start with: `<name>.<incarnation>` (then a queue id)."""
        return f"{self.name}.{self.incarnation}"


def parse_hello(argument: str | None) -> Hello | None:
    """The argument of `XSHADOW <name> <incarnation>`, or None when malformed."""
    parts = (argument or "").split()
    if len(parts) != 2 or not _NAME.match(parts[0]) or not _INCARNATION.match(parts[1]):
        return None
    return Hello(parts[0], parts[1])


def parse_hello_reply(text: str) -> Hello | None:
    """D's answer text after the code ("2.0.0 XSHADOW hub-b 5b1e0c7a9d2f4e33")."""
    parts = text.split()
    if len(parts) != 4 or parts[1] != "XSHADOW":
        return None
    return parse_hello(f"{parts[2]} {parts[3]}")


def parse_discard(argument: str | None) -> tuple[int, int | None] | None:
    """`XQDISCARD <max> [ACK=<seq>]` as (max, ack), or None when malformed."""
    parts = (argument or "").split()
    if not 1 <= len(parts) <= 2 or not parts[0].isdigit():
        return None
    ack: int | None = None
    if len(parts) == 2:
        key, _, value = parts[1].partition("=")
        if key.upper() != "ACK" or not value.isdigit():
            return None
        ack = int(value)
    return min(int(parts[0]), 1000), ack


def parse_discard_reply(text: str) -> tuple[list[str], int] | None:
    """The ids and the sequence number from a multi-line XQDISCARD reply's text."""
    ids: list[str] = []
    seq: int | None = None
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "2.0.0":
            words = words[1:]
        if not words:
            continue
        key, _, value = words[0].partition("=")
        if key == "ID" and _QUEUE_ID.match(value):
            ids.append(value)
        elif key == "SEQ" and value.isdigit():
            seq = int(value)
    return None if seq is None else (ids, seq)


def parse_taken(argument: str | None) -> list[str] | None:
    """`XQTAKEN <id>...` as a list of queue ids, or None when malformed."""
    ids = (argument or "").split()
    if not ids or len(ids) > MAX_TAKEN_PER_COMMAND or not all(_QUEUE_ID.match(i) for i in ids):
        return None
    return ids


def parse_hold(value: str) -> str | None:
    """An XHOLD value, the primary's relay `host:port` (`[v6]:port`), or None when malformed."""
    host, colon, port = value.rpartition(":")
    if not colon or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        return None
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not bare or not all(c.isalnum() or c in ".-:" for c in bare):
        return None
    return value


def valid_origin(value: str) -> bool:
    """Whether an XORIGIN value is a well-formed origin key (node.incarnation.queue-id)."""
    return bool(_ORIGIN.match(value))


def parse_queued_reply(text: str) -> str | None:
    """The queue id from a hubd `250 2.0.0 <queue-id> queued` reply text."""
    words = text.split()
    if len(words) >= 3 and words[-1] == "queued" and _QUEUE_ID.match(words[-2]):
        return words[-2]
    return None
