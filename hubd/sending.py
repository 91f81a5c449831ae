"""Submitting test messages over SMTP (`hubd send`), one reply line per message.

Public: build_test_message(), send_test_messages().
"""

from __future__ import annotations

import email.utils
from email.message import EmailMessage
from email.policy import SMTP

import aiosmtplib

from hubd.config import HostPort


def build_test_message(sender: str, recipients: list[str], subject: str, serial: int) -> bytes:
    """A small RFC 5322 message with a unique Message-ID, as CRLF bytes."""
    message = EmailMessage(policy=SMTP)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = f"{subject} #{serial}"
    message["Date"] = email.utils.formatdate(localtime=False)
    message["Message-ID"] = email.utils.make_msgid(domain="hubd.test")
    message.set_content(f"Test message {serial} sent by hubd send.\n")
    return message.as_bytes()


async def send_test_messages(
    server: HostPort, sender: str, recipients: list[str], *, count: int, subject: str
) -> int:
    """Send `count` messages on one connection; print each reply; return the failures."""
    failures = 0
    async with aiosmtplib.SMTP(
        hostname=server.host, port=server.port, start_tls=False, local_hostname="hubd-send"
    ) as client:
        for serial in range(1, count + 1):
            data = build_test_message(sender, recipients, subject, serial)
            try:
                refused, reply = await client.sendmail(sender, recipients, data)
            except aiosmtplib.SMTPException as error:
                failures += 1
                print(f"{serial}: refused: {error}")
                continue
            for address, response in refused.items():
                print(f"{serial}: {address} refused: {response.code} {response.message}")
            print(f"{serial}: {reply}")
    return failures
