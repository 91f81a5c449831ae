"""Submitting test messages over SMTP (`hubd send`), one reply line per message.

Public: build_test_message(), send_test_messages(), check_addresses(), SendError.
Failures: SendError (one line) when an address is malformed or the server cannot be
reached; refusals by the server are printed with their reply codes and counted.
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable
from email.message import EmailMessage
from email.policy import SMTP

import aiosmtplib

from hubd.config import HostPort
from hubd.smtp.address import parse_mailbox

CONNECT_TIMEOUT = 10.0


class SendError(Exception):
    """`hubd send` cannot go on; the text is the one line to show."""


def check_addresses(sender: str, recipients: list[str]) -> None:
    """Raise SendError for a malformed sender (empty is the null sender) or recipient."""
    if sender and parse_mailbox(sender) is None:
        raise SendError(f"--from: not an address: {sender!r} (expected local@domain)")
    for recipient in recipients:
        if parse_mailbox(recipient) is None:
            raise SendError(f"--to: not an address: {recipient!r} (expected local@domain)")


def build_test_message(sender: str, recipients: list[str], subject: str, serial: int) -> bytes:
    """A small RFC 5322 message with a unique Message-ID, as CRLF bytes."""
    message = EmailMessage(policy=SMTP)
    message["From"] = sender or "MAILER-DAEMON@hubd.test"
    message["To"] = ", ".join(recipients)
    message["Subject"] = f"{subject} #{serial}"
    message["Date"] = email.utils.formatdate(localtime=False)
    message["Message-ID"] = email.utils.make_msgid(domain="hubd.test")
    message.set_content(f"Test message {serial} sent by hubd send.\n")
    return message.as_bytes()


def _why(error: BaseException) -> str:
    cause = error.__cause__
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused (is a node listening there?)"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    if isinstance(error, TimeoutError):
        return f"no answer within {CONNECT_TIMEOUT:.0f}s"
    return str(error)


def _reply(error: aiosmtplib.SMTPResponseException) -> str:
    return f"{error.code} {error.message}".replace("\r", " ").replace("\n", " ")


async def _transaction(
    client: aiosmtplib.SMTP,
    sender: str,
    recipients: list[str],
    data: bytes,
    say: Callable[[str], None],
) -> bool:
    """One message, MAIL to DATA, each refusal printed with its code; True when accepted."""
    try:
        await client.mail(sender)
    except aiosmtplib.SMTPResponseException as error:
        say(f"MAIL refused: {_reply(error)}")
        await client.rset()
        return False
    accepted = 0
    for recipient in recipients:
        try:
            await client.rcpt(recipient)
        except aiosmtplib.SMTPResponseException as error:
            say(f"{recipient} refused: {_reply(error)}")
        else:
            accepted += 1
    if not accepted:
        await client.rset()
        return False
    try:
        response = await client.data(data)
    except aiosmtplib.SMTPResponseException as error:
        say(f"DATA refused: {_reply(error)}")
        return False
    say(f"{response.code} {response.message}")
    return accepted == len(recipients)


async def send_test_messages(
    server: HostPort,
    sender: str,
    recipients: list[str],
    *,
    count: int,
    subject: str,
    out: Callable[[str], None] = print,
) -> int:
    """Send `count` messages on one connection; print each reply; return the failures."""
    check_addresses(sender, recipients)
    client = aiosmtplib.SMTP(
        hostname=server.host,
        port=server.port,
        start_tls=False,
        local_hostname="hubd-send",
        timeout=CONNECT_TIMEOUT,
    )
    try:
        await client.connect()
        await client.ehlo()
    except (aiosmtplib.SMTPException, OSError) as error:
        client.close()
        raise SendError(f"cannot reach {server}: {_why(error)}") from None
    failures = 0
    try:
        for serial in range(1, count + 1):
            data = build_test_message(sender, recipients, subject, serial)

            def say(line: str, serial: int = serial) -> None:
                out(f"{serial}: {line}")

            if not await _transaction(client, sender, recipients, data, say):
                failures += 1
        await client.quit()
    except (aiosmtplib.SMTPException, OSError) as error:
        client.close()
        raise SendError(f"lost the connection to {server}: {error}") from None
    return failures
