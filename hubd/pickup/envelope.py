"""Reading a dropped .eml file: its envelope, and the bytes to store.

Owns: what a pickup or replay file must hold, and what hubd takes from it. Pickup: the
sender from Sender: (else a single From:), the recipients from To, Cc and Bcc, Bcc removed.
Replay: the sender from X-Sender, the recipients from X-Receiver, both removed. Line ends
become CRLF; a Message-ID is added when there is none.
Public: Source, Submission, Refusal, SubmissionLimits, read_submission().
Failures: none raised; a file hubd will not take comes back as a Refusal with the reason.
Limits: headers are parsed with `email` (policy.SMTP, never refolded); the header section
is written anew only when a header is removed, and the body never is. Parameters after an
X-Sender or X-Receiver address (Exchange's NOTIFY, ORCPT ...) are ignored.
See also: hubd/pickup/directory.py (the files), RFC 5322 3.6.2-3.6.3.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from email import policy
from email.errors import InvalidHeaderDefect
from email.headerregistry import AddressHeader, BaseHeader
from email.message import Message
from email.parser import BytesHeaderParser

from hubd.smtp.address import parse_mailbox

_BARE_LF = re.compile(rb"(?<!\r)\n")
_BARE_CR = re.compile(rb"\r(?!\n)")
_RECEIVED = re.compile(rb"^received[ \t]*:", re.IGNORECASE | re.MULTILINE)
# Keep every header as written: only the space after the colon is normalised.
_KEEP = policy.SMTP.clone(refold_source="none")
_REPLAY_HEADERS = ("X-Sender", "X-Receiver", "X-EndOfInjectedXHeaders")


class Source(enum.StrEnum):
    PICKUP = "pickup"
    REPLAY = "replay"


@dataclass(frozen=True, slots=True)
class Submission:
    """What a file submits: envelope, stored bytes (CRLF) and its Message-ID."""

    sender: str
    recipients: tuple[str, ...]
    data: bytes
    message_id: str | None


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a file is set aside as .bad (one line)."""

    reason: str


@dataclass(frozen=True, slots=True)
class SubmissionLimits:
    max_line_length: int
    max_recipients: int
    max_received_headers: int


def _split(data: bytes) -> tuple[bytes, bytes]:
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return data if data.endswith(b"\r\n") else data + b"\r\n", b""
    return data[: end + 2], data[end + 4 :]


def _addresses(headers: Message, name: str) -> list[str] | Refusal:
    found: list[str] = []
    for header in headers.get_all(name, []):
        if not isinstance(header, AddressHeader) or not isinstance(header, BaseHeader):
            return Refusal(f"{name}: not a list of addresses")
        if any(isinstance(d, InvalidHeaderDefect) for d in header.defects):
            return Refusal(f"{name}: not a list of addresses")
        for address in header.addresses:
            if parse_mailbox(address.addr_spec) is None:
                return Refusal(f"{name}: not an address hubd accepts: {address.addr_spec!r}")
            found.append(address.addr_spec)
    return found


def _pickup_envelope(headers: Message) -> tuple[str, list[str]] | Refusal:
    senders = _addresses(headers, "Sender")
    if isinstance(senders, Refusal):
        return senders
    if not senders:
        senders = _addresses(headers, "From")
        if isinstance(senders, Refusal):
            return senders
        if len(senders) != 1:
            return Refusal("From: must hold exactly one address (or give a Sender: header)")
    recipients: list[str] = []
    for name in ("To", "Cc", "Bcc"):
        found = _addresses(headers, name)
        if isinstance(found, Refusal):
            return found
        recipients += found
    return senders[0], recipients


def _xheader_address(value: str) -> str:
    text = value.strip()
    if text.startswith("<"):
        return text[1 : text.find(">")] if ">" in text else text
    return text.split()[0] if text else ""


def _replay_envelope(headers: Message) -> tuple[str, list[str]] | Refusal:
    senders = [_xheader_address(str(v)) for v in headers.get_all("X-Sender", [])]
    if len(senders) != 1:
        return Refusal("a replay file needs exactly one X-Sender: header")
    if senders[0] and parse_mailbox(senders[0]) is None:
        return Refusal(f"X-Sender: not an address hubd accepts: {senders[0]!r}")
    recipients = [_xheader_address(str(v)) for v in headers.get_all("X-Receiver", [])]
    for recipient in recipients:
        if parse_mailbox(recipient) is None:
            return Refusal(f"X-Receiver: not an address hubd accepts: {recipient!r}")
    return senders[0], recipients


def _unique(addresses: list[str]) -> tuple[str, ...]:
    seen: dict[str, str] = {}
    for address in addresses:
        seen.setdefault(address.lower(), address)
    return tuple(seen.values())


def _envelope(
    headers: Message, source: Source, limits: SubmissionLimits
) -> tuple[str, tuple[str, ...]] | Refusal:
    envelope = _pickup_envelope(headers) if source is Source.PICKUP else _replay_envelope(headers)
    if isinstance(envelope, Refusal):
        return envelope
    sender, listed = envelope
    recipients = _unique(listed)
    if not recipients:
        where = "To, Cc or Bcc" if source is Source.PICKUP else "X-Receiver"
        return Refusal(f"no recipients (none in {where})")
    if len(recipients) > limits.max_recipients:
        return Refusal(f"more than smtp.max_recipients ({limits.max_recipients}) recipients")
    return sender, recipients


def _message_id(headers: Message) -> str | None:
    value = headers.get("Message-ID")
    if value is None:
        return None
    text = re.sub(r"[\x00-\x1f\x7f]+", " ", str(value)).strip()
    return text[:998] or None


def _content_fault(data: bytes, limits: SubmissionLimits) -> Refusal | None:
    if b"\x00" in data:
        return Refusal("the file holds NUL bytes")
    if _BARE_CR.search(data):
        return Refusal("the file holds a bare CR (a CR not followed by LF)")
    longest = max((len(line) + 2 for line in data.split(b"\r\n")), default=0)
    if longest > limits.max_line_length:
        return Refusal(f"a line is longer than smtp.max_line_length ({limits.max_line_length})")
    return None


def read_submission(
    raw: bytes, source: Source, limits: SubmissionLimits, default_message_id: str
) -> Submission | Refusal:
    """The envelope and stored bytes of a dropped file, or why it is refused."""
    data = _BARE_LF.sub(b"\r\n", raw)
    fault = _content_fault(data, limits)
    if fault is not None:
        return fault
    head, body = _split(data)
    headers = BytesHeaderParser(policy=_KEEP).parsebytes(head + b"\r\n")
    if headers.defects or not headers.keys():
        return Refusal("the file does not start with a header section (RFC 5322)")
    if len(_RECEIVED.findall(head)) > limits.max_received_headers:
        return Refusal(f"more than {limits.max_received_headers} Received: headers (a loop)")
    try:
        return _submission(
            headers,
            head=head,
            body=body,
            source=source,
            limits=limits,
            default_message_id=default_message_id,
        )
    except Exception as error:  # email's parser raises on some input (IndexError on '"a b"@')
        return Refusal(f"a header cannot be parsed ({type(error).__name__})")


def _submission(
    headers: Message,
    *,
    head: bytes,
    body: bytes,
    source: Source,
    limits: SubmissionLimits,
    default_message_id: str,
) -> Submission | Refusal:
    envelope = _envelope(headers, source, limits)
    if isinstance(envelope, Refusal):
        return envelope
    sender, recipients = envelope
    removed = ("Bcc",) if source is Source.PICKUP else _REPLAY_HEADERS
    if any(name in headers for name in removed):
        for name in removed:
            del headers[name]
        head = headers.as_bytes(policy=_KEEP)[:-2]  # without the empty line
    message_id = _message_id(headers)
    if message_id is None:
        message_id = default_message_id
        head = f"Message-ID: {message_id}\r\n".encode() + head
    return Submission(sender, recipients, head + b"\r\n" + body, message_id)
