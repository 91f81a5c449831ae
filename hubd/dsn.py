"""Delivery status notifications (RFC 3464): the bytes of a bounce or a delay warning.

Owns: the text of a DSN: multipart/report with a human part, a message/delivery-status part
(per-message and per-recipient fields), and the returned message (whole, within a size cap,
or its headers: RFC 3461 RET); and the rule for which recipients get one (RFC 3461 NOTIFY).
Public: DsnReport, DsnRecipient, build_dsn(), status_of(), wants_notice().
Failures: none raised.
Limits: the MIME is written here, not with the email package, because the returned message
must be included byte for byte and the email package re-encodes 8-bit bodies; every line
hubd writes itself is ASCII (addresses with UTF-8 are written as utf-8 types, RFC 6533).
See also: delivery/scheduler.py (when DSNs are made), RFC 3461, 3462, 3464.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from typing import Literal

from hubd.smtp.message import header_section

MAX_RETURNED_BYTES = 256 * 1024  # larger originals are returned as headers only

Action = Literal["failed", "delayed", "delivered", "relayed"]
Notify = Literal["SUCCESS", "FAILURE", "DELAY"]

_ENHANCED = re.compile(r"^\d{3}[ -]([245]\.\d{1,3}\.\d{1,3})\b")


@dataclass(frozen=True, slots=True)
class DsnRecipient:
    address: str
    action: Action
    reply: str  # the SMTP reply that decided it, "550 5.1.1 No such user"
    remote_mta: str = ""
    orcpt: str = ""


@dataclass(frozen=True, slots=True)
class DsnReport:
    reporting_mta: str
    sender: str
    queue_id: str
    arrival: datetime
    now: datetime
    original: bytes
    recipients: Sequence[DsnRecipient]
    message_id: str
    boundary: str
    envid: str = ""
    ret: str = ""  # "FULL", "HDRS" or "" (the default: the whole message within the cap)
    retry_until: datetime | None = None
    # A notice to the postmaster about mail from <> (a DSN) that could not be delivered.
    double_bounce: bool = False


def status_of(reply: str) -> str:
    """The enhanced status code of an SMTP reply, or one derived from its basic code."""
    match = _ENHANCED.match(reply)
    if match:
        return match[1]
    head = reply[:1]
    return f"{head}.0.0" if head in "245" and head else "4.0.0"


def wants_notice(notify: str, kind: Notify) -> bool:
    """Whether a recipient's RFC 3461 NOTIFY asks for this kind of DSN."""
    if not notify:  # no NOTIFY: failures and delays, as RFC 3461 4.1 allows
        return kind in ("FAILURE", "DELAY")
    words = {w.strip().upper() for w in notify.split(",")}
    return "NEVER" not in words and kind in words


def _address_type(address: str) -> str:
    return f"rfc822; {address}" if address.isascii() else f"utf-8; {address}"


def _subject(report: DsnReport) -> str:
    if report.double_bounce:
        return "Postmaster Copy: Undelivered Mail (double bounce)"
    recipients = report.recipients
    actions = {r.action for r in recipients}
    if actions == {"delayed"}:
        return "Delayed Mail (still being retried)"
    if actions <= {"delivered", "relayed"}:
        return "Successful Mail Delivery Report"
    return "Undelivered Mail Returned to Sender"


def _human_part(report: DsnReport) -> str:
    lines = [
        f"This is the mail system at host {report.reporting_mta}.",
        "",
    ]
    actions = {r.action for r in report.recipients}
    if report.double_bounce:
        lines.append("A message with an empty sender (a delivery status notification) could")
        lines.append("not be delivered; it has no sender to return to, so it comes to you.")
    elif "failed" in actions:
        lines.append("Your message could not be delivered to one or more recipients.")
    if "delayed" in actions:
        until = format_datetime(report.retry_until) if report.retry_until else "its expiry"
        lines.append("Your message has not been delivered yet to one or more recipients.")
        lines.append(f"It will be retried until {until}; you need not resend it.")
    if actions & {"delivered", "relayed"}:
        lines.append("Your message was delivered or relayed as you asked to be told.")
    lines.append("")
    for recipient in report.recipients:
        lines.append(f"<{recipient.address}>: {recipient.action}: {recipient.reply}")
    return "\r\n".join(lines) + "\r\n"


def _status_part(report: DsnReport) -> str:
    fields = [f"Reporting-MTA: dns; {report.reporting_mta}", f"X-Hubd-Queue-ID: {report.queue_id}"]
    if report.envid:
        fields.append(f"Original-Envelope-Id: {report.envid}")
    fields.append(f"Arrival-Date: {format_datetime(report.arrival)}")
    blocks = ["\r\n".join(fields)]
    for recipient in report.recipients:
        block = []
        if recipient.orcpt:
            block.append(f"Original-Recipient: {recipient.orcpt}")
        block += [
            f"Final-Recipient: {_address_type(recipient.address)}",
            f"Action: {recipient.action}",
            f"Status: {status_of(recipient.reply)}",
        ]
        if recipient.remote_mta:
            block.append(f"Remote-MTA: dns; {recipient.remote_mta}")
        if recipient.reply[:1] in "2345" and recipient.reply[:3].isdigit():
            block.append(f"Diagnostic-Code: smtp; {recipient.reply}")
        block.append(f"Last-Attempt-Date: {format_datetime(report.now)}")
        if recipient.action == "delayed" and report.retry_until is not None:
            block.append(f"Will-Retry-Until: {format_datetime(report.retry_until)}")
        blocks.append("\r\n".join(block))
    return "\r\n\r\n".join(blocks) + "\r\n"


def _returned_part(report: DsnReport) -> bytes:
    whole = report.ret != "HDRS" and len(report.original) <= MAX_RETURNED_BYTES
    if whole:
        head = b"Content-Type: message/rfc822\r\nContent-Description: Undelivered Message\r\n"
        body = report.original
    else:
        head = b"Content-Type: text/rfc822-headers\r\nContent-Description: Message Headers\r\n"
        body = header_section(report.original)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return head + b"\r\n" + body


def build_dsn(report: DsnReport) -> bytes:
    """The complete DSN message, CRLF line ends, ready to queue with MAIL FROM:<>."""
    boundary = report.boundary
    headers = [
        f"From: Mail Delivery System <MAILER-DAEMON@{report.reporting_mta}>",
        f"To: <{report.sender}>",
        f"Subject: {_subject(report)}",
        f"Date: {format_datetime(report.now)}",
        f"Message-ID: {report.message_id}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
    ]
    parts = [
        "Content-Type: text/plain; charset=us-ascii\r\nContent-Description: Notification\r\n\r\n"
        + _human_part(report),
        "Content-Type: message/delivery-status\r\nContent-Description: Delivery report\r\n\r\n"
        + _status_part(report),
    ]
    text = "\r\n".join(headers) + "\r\n\r\nThis is a MIME-encapsulated message.\r\n\r\n"
    for part in parts:
        text += f"--{boundary}\r\n{part}\r\n"
    data = text.encode("utf-8", "surrogateescape")
    data += f"--{boundary}\r\n".encode() + _returned_part(report)
    return data + f"\r\n--{boundary}--\r\n".encode()
