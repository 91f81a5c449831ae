"""Shadow before acknowledgement: a redundancy copy of a just-committed message on a peer.

Owns: the accepting node's side of `[shadow] before_ack`: finding a live redundancy peer
(in the order of `redundancy_peers`), recording that the message's departure owes it a
discard notice (in the message's own commit when the peer is the one that took the last
copy, else in a commit of its own before the copy), sending it the copy marked XHOLD (it
holds it as a shadow of this node's primary) on a connection kept open for the next, and
afterwards making the message due (copy made, or given up) or withdrawing it.
Public: Redundancy, CopyResult.
Failures: none raised but cancellation; every failure to copy is a False result (logged).
Limits: only the first peer that answers XSHADOW with HOLD is sent the copy; if that
transfer fails, no other is tried (the message owes one peer its notice).
See also: docs/xshadow.md (Shadow before acknowledgement), hubd/smtp/executor.py (caller).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

import aiosmtplib

from hubd.delivery.transfer import StaleConnection, body_chunks, send_mail
from hubd.shadow.client import PeerLink, ShadowClient
from hubd.shadow.protocol import HOLD_CAPABILITY, Hello
from hubd.smtp.message import ReceivedMessage
from storage.reader import QueueReader
from storage.shadows import ShadowLedger

log = logging.getLogger(__name__)

Connect = Callable[[str], Awaitable[aiosmtplib.SMTP]]
MAX_IDLE = 32  # connections kept open to the peers between copies


class CopyResult(enum.Enum):
    COPIED = "copied"  # a peer holds the copy
    LEFT = "left"  # the message left this node before a copy was needed
    FAILED = "failed"  # no peer took it within the timeout


@dataclass(slots=True)
class _Connection:
    client: aiosmtplib.SMTP
    link: PeerLink


class Redundancy:
    """Makes and settles the redundancy copies of one node's accepted messages."""

    def __init__(
        self,
        *,
        peers: Sequence[str],
        connect: Connect,
        shadow: ShadowClient,
        ledger: ShadowLedger,
        reader: QueueReader,
        relay_address: Callable[[], str],
        origin_prefix: str,
        clock: Callable[[], float],
        wake: Callable[[], None],
    ) -> None:
        self._peers = list(peers)
        self._connect = connect
        self._shadow = shadow
        self._ledger = ledger
        self._reader = reader
        self._relay_address = relay_address
        self._origin_prefix = origin_prefix
        self._clock = clock
        self._wake = wake
        self._idle: list[_Connection] = []  # open, XSHADOW said: reused for the next copy
        self._expected: Hello | None = None  # the peer that took the last copy

    def close(self) -> None:
        """Close the connections kept open to the peers (the node is stopping)."""
        for connection in self._idle:
            connection.client.close()
        self._idle.clear()

    def prepare(self, message: ReceivedMessage) -> ReceivedMessage:
        """The message to commit: owing its notice to the peer expected to take the copy,
        so that the usual case needs no second commit before the copy."""
        return message if self._expected is None else replace(message, owed_to=self._expected)

    async def copy(self, message: ReceivedMessage, within: float) -> CopyResult:
        """Copy a committed message (as prepare() made it) to one live peer within `within`
        seconds."""
        try:
            async with asyncio.timeout(within):
                return await self._copy(message, message.owed_to, within)
        except Exception as error:  # any failure of the copy: not redundant
            log.warning("no redundant copy of %s: %r", message.queue_id, error)
            return CopyResult.FAILED

    async def release(self, queue_id: str) -> None:
        """Make the message due now (it was committed not due, while the copy was made)."""
        await self._ledger.release_copied(queue_id, self._clock())
        self._wake()

    async def withdraw(self, queue_id: str) -> bool:
        """Delete the message (`require` refusal); False when part of it is being delivered."""
        return await self._ledger.withdraw(queue_id, self._clock())

    async def _copy(
        self, message: ReceivedMessage, owed: Hello | None, within: float
    ) -> CopyResult:
        # A peer that stalls (cut off, not closed) must leave time for the next: a kept
        # connection gets half the time, each hello an equal share of what remains.
        share = within / (len(self._peers) + 1)
        while self._idle:
            connection = self._idle.pop()
            try:
                async with asyncio.timeout(within / 2):
                    return await self._send_on(connection, message, owed, reused=True)
            except (StaleConnection, TimeoutError) as error:
                log.info("kept connection to %s: %r", connection.link.address, error)
                connection.client.close()
                self._drop_idle(connection.link.address)
            except BaseException:
                connection.client.close()
                raise
        fresh = await self._first_live_peer(share)
        if fresh is None:
            return CopyResult.FAILED
        try:
            return await self._send_on(fresh, message, owed, reused=False)
        except BaseException:
            fresh.client.close()
            raise

    async def _send_on(
        self, connection: _Connection, message: ReceivedMessage, owed: Hello | None, *, reused: bool
    ) -> CopyResult:
        peer = connection.link.peer
        # The commit owes another peer (or none) the notice: record this one first.
        if peer != owed and not await self._ledger.owe_copy(
            message.queue_id, peer.name, peer.incarnation, self._clock()
        ):
            self._keep(connection)
            return CopyResult.LEFT
        await self._send(connection.client, message, reused=reused)
        self._expected = peer
        self._keep(connection)
        return CopyResult.COPIED

    def _keep(self, connection: _Connection) -> None:
        if len(self._idle) < MAX_IDLE:
            self._idle.append(connection)
        else:
            connection.client.close()

    def _drop_idle(self, address: str) -> None:
        """A kept connection to `address` failed: the others to it are suspect too."""
        for connection in [c for c in self._idle if c.link.address == address]:
            self._idle.remove(connection)
            connection.client.close()

    async def _first_live_peer(self, share: float) -> _Connection | None:
        for address in self._peers:
            client: aiosmtplib.SMTP | None = None
            try:
                async with asyncio.timeout(share):
                    client = await self._connect(address)
                    await client.ehlo()
                    if HOLD_CAPABILITY in client.esmtp_extensions.get("xshadow", "").split():
                        link = await self._shadow.open(client, address)
                        if link is not None:
                            return _Connection(client, link)
                    else:
                        log.info("redundancy peer %s does not offer XSHADOW HOLD", address)
            except Exception as error:  # unreachable, refused, stalled: try the next one
                log.info("redundancy peer %s: %s", address, error)
            if client is not None:
                client.close()
        return None

    async def _send(
        self, client: aiosmtplib.SMTP, message: ReceivedMessage, *, reused: bool
    ) -> None:
        body = await self._reader.body_of(message.queue_id)
        if body is None:
            raise OSError(f"{message.queue_id} is gone from the queue")
        origin = f"{self._origin_prefix}.{message.queue_id}"  # as the intake stored it
        sent = await send_mail(
            client,
            message.sender,
            message.recipients,
            body_chunks(body),
            size=body.size,
            options=[f"XORIGIN={origin}", f"XHOLD={self._relay_address()}"],
            reused=reused,
        )
        if sent.refused:
            raise aiosmtplib.SMTPException(f"copy refused for {sorted(sent.refused)}")
