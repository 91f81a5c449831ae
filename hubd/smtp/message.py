"""Checks and trace headers on a received message's bytes.

Owns: the line-ending and NUL rules for DATA, counting Received: headers (loop detection),
reading Message-ID, and building hubd's own Received: header.
Public: find_content_fault(), count_received(), message_id(), received_header().
Failures: none raised; faults come back as a Reply.
Limits: headers are read from the header section only (up to the first empty line).
See also: RFC 5321 2.3.8 (CRLF only), 4.4 (trace information); RFC 6152 (no NUL).
"""

from __future__ import annotations

import re
from datetime import datetime
from email.utils import format_datetime

from hubd import replies
from hubd.replies import Reply

_BARE_LINE_END = re.compile(rb"\r(?!\n)|(?<!\r)\n")
_RECEIVED = re.compile(rb"^received[ \t]*:", re.IGNORECASE | re.MULTILINE)
_MESSAGE_ID = re.compile(
    rb"^message-id[ \t]*:[ \t]*(.*?)\r\n(?![ \t])", re.IGNORECASE | re.MULTILINE | re.DOTALL
)


def header_section(data: bytes) -> bytes:
    """The header lines of a CRLF message, each ending in CRLF, without the empty line."""
    if data.startswith(b"\r\n"):
        return b""
    end = data.find(b"\r\n\r\n")
    return data if end < 0 else data[: end + 2]


def find_content_fault(data: bytes) -> Reply | None:
    """The reply refusing a message with a bare CR, a bare LF or a NUL, else None."""
    if _BARE_LINE_END.search(data):
        return replies.BARE_LINE_END
    if b"\x00" in data:
        return replies.NUL_IN_MESSAGE
    return None


def count_received(data: bytes) -> int:
    """How many Received: headers the message carries."""
    return len(_RECEIVED.findall(header_section(data)))


def message_id(data: bytes) -> str | None:
    """The Message-ID header's value, unfolded, or None."""
    match = _MESSAGE_ID.search(header_section(data))
    if match is None:
        return None
    value = re.sub(rb"\r\n[ \t]+", b" ", match[1]).strip()
    return value.decode("utf-8", "replace")[:998] or None


def received_header(
    *,
    helo: str,
    client_ip: str,
    hostname: str,
    protocol: str,
    queue_id: str,
    recipients: list[str],
    now: datetime,
) -> bytes:
    """hubd's Received: header (RFC 5321 4.4), folded, ending in CRLF."""
    # RFC 5321 4.1.3: an IPv6 address literal carries the "IPv6:" tag.
    literal = f"IPv6:{client_ip}" if ":" in client_ip else client_ip
    lines = [
        f"Received: from {helo} ([{literal}])",
        f"\tby {hostname} (hubd) with {protocol} id {queue_id}",
    ]
    tail = f"; {format_datetime(now)}"
    if len(recipients) == 1:
        lines.append(f"\tfor <{recipients[0]}>{tail}")
    else:
        lines[-1] += tail
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "surrogateescape")
