"""One outbound mail transaction: the envelope, then the body streamed in chunks.

Owns: MAIL (with SIZE), RCPT per recipient, and DATA written chunk by chunk with
dot-stuffing that is right across chunk boundaries, so a message of any size is sent
without being held whole (aiosmtplib's data() wants the whole message, and normalises and
stuffs it with regexes over all of it: hubd's stored bodies are CRLF-clean already).
Public: send_mail(), body_chunks(), dot_stuff(), DotStuffer, Transaction, StaleConnection.
Failures: aiosmtplib's own exceptions (SMTPSenderRefused, SMTPRecipientsRefused,
SMTPDataError, SMTPServerDisconnected ...); StaleConnection when a reused connection was
closed by the server before it answered MAIL (nothing of the message was taken).
Limits: relies on aiosmtplib's SMTPProtocol.write() and its flow control
(`_drain_helper`), pinned in pyproject.toml and exercised by the delivery tests; no
PIPELINING (the round trips it would save cost ~0.1 ms of CPU each on this path).
See also: hubd/delivery/smtp_client.py (the caller).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass

import aiosmtplib

from storage.spool import StoredBody

CHUNK = 1 << 16


class StaleConnection(Exception):
    """A reused connection turned out closed before anything of the message was taken."""


@dataclass(frozen=True, slots=True)
class Transaction:
    """What the server said: recipients it refused (address -> reply) and the DATA reply."""

    refused: dict[str, aiosmtplib.SMTPResponse]
    data_reply: str


class DotStuffer:
    """RFC 5321 4.5.2: double every '.' that starts a line, fed chunk by chunk."""

    def __init__(self) -> None:
        self._tail = b"\r\n"  # the last two bytes seen: the body's first byte starts a line

    def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return chunk
        # A line start the chunk cannot see itself: after a CRLF that ended the last chunk,
        # or split across it (CR there, LF here).
        seam = self._tail + chunk[:2]
        out = chunk.replace(b"\r\n.", b"\r\n..")
        if seam.startswith(b"\r\n."):
            out = b"." + out
        elif seam[1:].startswith(b"\r\n."):
            out = out[:1] + b"." + out[1:]
        self._tail = (self._tail + chunk)[-2:]
        return out


def dot_stuff(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The stuffed form of a body given in chunks."""
    stuffer = DotStuffer()
    return (stuffer.feed(chunk) for chunk in chunks)


async def _write_body(client: aiosmtplib.SMTP, chunks: AsyncIterator[bytes]) -> bool:
    """Write the stuffed body; True when it ended with CRLF."""
    protocol = client.protocol
    assert protocol is not None
    stuffer = DotStuffer()
    ended = True
    async for chunk in chunks:
        if not chunk:
            continue
        protocol.write(stuffer.feed(chunk))
        ended = chunk.endswith(b"\r\n")
        # Wait while the transport's buffer is over its high-water mark: memory stays bounded.
        await protocol._drain_helper()
    return ended


async def send_mail(
    client: aiosmtplib.SMTP,
    sender: str,
    recipients: Sequence[str],
    chunks: AsyncIterator[bytes],
    *,
    size: int,
    options: Sequence[str],
    reused: bool,
) -> Transaction:
    """Run one transaction on `client`; the body comes from `chunks` (`size` bytes)."""
    mail_options = (
        [f"SIZE={size}", *options] if client.supports_extension("size") else list(options)
    )
    try:
        await client.mail(sender, options=mail_options)
    except (aiosmtplib.SMTPServerDisconnected, ConnectionError):
        if reused:
            raise StaleConnection from None
        raise
    refused: dict[str, aiosmtplib.SMTPResponse] = {}
    for recipient in recipients:
        try:
            await client.rcpt(recipient)
        except aiosmtplib.SMTPRecipientRefused as error:
            refused[recipient] = aiosmtplib.SMTPResponse(error.code, error.message)
    if len(refused) == len(recipients):
        await _reset(client)
        raise aiosmtplib.SMTPRecipientsRefused(
            [aiosmtplib.SMTPRecipientRefused(r.code, r.message, a) for a, r in refused.items()]
        )
    start = await client.execute_command(b"DATA")
    if start.code != 354:
        await _reset(client)
        raise aiosmtplib.SMTPDataError(start.code, start.message)
    if not await _write_body(client, chunks):
        client.protocol.write(b"\r\n")  # type: ignore[union-attr]
    reply = await client.execute_command(b".")
    if reply.code != 250:
        raise aiosmtplib.SMTPDataError(reply.code, reply.message)
    return Transaction(refused, reply.message)


async def _reset(client: aiosmtplib.SMTP) -> None:
    try:
        await client.rset()
    except (aiosmtplib.SMTPException, OSError):
        client.close()


async def body_chunks(body: StoredBody) -> AsyncIterator[bytes]:
    """A stored body's bytes for send_mail(): a spooled one read in a thread, chunk by chunk."""
    if body.spool is None:  # in memory already: no thread for it
        for chunk in body.chunks():
            yield chunk
        return
    chunks = body.chunks()
    while chunk := await asyncio.to_thread(next, chunks, b""):
        yield chunk
