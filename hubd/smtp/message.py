"""A message as the session accepted it, and the trace header hubd adds to it.

Owns: ReceivedMessage (what the intake commits), hubd's own Received: header, and finding
the header section of a stored message.
Public: ReceivedMessage, received_header(), header_section().
Failures: none raised.
Limits: the Received: header holds the HELO name and the client's address, both checked by
the session before they get here (no control characters, valid UTF-8), and a user name from
the users file (whose names are plain ASCII).
See also: RFC 5321 4.4 (trace information), hubd/intake.py (the commit), hubd/dsn.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime

from hubd.shadow.protocol import Hello
from hubd.smtp.params import MailParams, RcptParams
from hubd.smtp.spooling import Content


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """A message as accepted at the end of DATA, before it is committed."""

    queue_id: str
    sender: str  # "" for the null reverse-path
    recipients: tuple[str, ...]
    trace: bytes  # hubd's Received: header, CRLF-terminated
    content: Content  # the message as the client sent it, unstuffed (held, or spooled)
    received_at: float
    message_id: str | None
    client_ip: str
    helo: str
    mail_params: MailParams = field(default_factory=MailParams)
    rcpt_params: tuple[RcptParams, ...] = ()
    upstream: Hello | None = None  # the XSHADOW peer this came from, owed a discard notice
    # Shadow before acknowledgement: not due before this, while its copy is being made,
    # and the redundancy peer expected to take the copy, owed a discard notice.
    not_before: float | None = None
    owed_to: Hello | None = None

    @property
    def size(self) -> int:
        """Octets of the message as stored: the trace header, then the content."""
        content = self.content
        return len(self.trace) + (len(content) if isinstance(content, bytes) else content.size)


def header_section(data: bytes) -> bytes:
    """The header lines of a CRLF message, each ending in CRLF, without the empty line."""
    if data.startswith(b"\r\n"):
        return b""
    end = data.find(b"\r\n\r\n")
    return data if end < 0 else data[: end + 2]


def received_header(
    *,
    helo: str,
    client_ip: str,
    hostname: str,
    protocol: str,
    queue_id: str,
    recipients: list[str],
    now: datetime,
    tls: str | None = None,
    user: str | None = None,
) -> bytes:
    """hubd's Received: header (RFC 5321 4.4), folded, ending in CRLF; with the TLS
    version and the authenticated user as a comment when there are (RFC 8314 7.4 style)."""
    # RFC 5321 4.1.3: an IPv6 address literal carries the "IPv6:" tag.
    literal = f"IPv6:{client_ip}" if ":" in client_ip else client_ip
    lines = [
        f"Received: from {helo} ([{literal}])",
        f"\tby {hostname} (hubd) with {protocol} id {queue_id}",
    ]
    notes = ([f"using {tls}"] if tls else []) + ([f"authenticated as {user}"] if user else [])
    if notes:
        lines.insert(1, f"\t({'; '.join(notes)})")
    tail = f"; {format_datetime(now)}"
    if len(recipients) == 1:
        lines.append(f"\tfor <{recipients[0]}>{tail}")
    else:
        lines[-1] += tail
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "surrogateescape")
