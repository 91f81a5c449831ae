"""The upstream side of XSHADOW on an open SMTP connection: hello, discards, take-overs.

Owns: saying XSHADOW to a peer and noticing a new incarnation (then resubmitting at once
what was shadowed with the old one), telling a returning peer which of its ids were taken
over (XQTAKEN), asking for discard notices and acknowledging them (XQDISCARD), and
resubmitting a dead peer's shadows.
Public: ShadowClient, PeerLink.
Failures: SMTP and socket errors propagate to the caller, which treats them as a failed
session; a malformed reply makes the peer count as not shadow-aware.
See also: docs/xshadow.md, shadow/heartbeat.py, delivery/smtp_client.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiosmtplib

from hubd.shadow.protocol import (
    MAX_TAKEN_PER_COMMAND,
    Hello,
    parse_discard_reply,
    parse_hello_reply,
)
from hubd.tracking import Tracker, TrackingEvent
from storage.model import HeldShadow
from storage.shadows import ShadowLedger

log = logging.getLogger(__name__)

DISCARD_BATCH = 100


@dataclass(frozen=True, slots=True)
class PeerLink:
    """An outbound session on which the peer answered XSHADOW."""

    address: str
    peer: Hello


def record_discard(
    tracker: Tracker,
    *,
    queue_id: str,
    sender: str,
    recipients: Sequence[str],
    peer_address: str,
    peer_name: str,
    peer_queue_id: str,
    message_id: str | None = None,
) -> None:
    """The DISCARD line for a shadow dropped because its peer delivered the message onward."""
    tracker.record(
        TrackingEvent.DISCARD,
        queue_id=queue_id,
        sender=sender,
        recipients=recipients,
        message_id=message_id,
        next_hop=peer_address,
        reply=f"delivered onward by {peer_name} as {peer_queue_id}",
    )


class ShadowClient:
    """XSHADOW as the sending (upstream) node."""

    def __init__(
        self,
        *,
        me: Hello,
        ledger: ShadowLedger,
        tracker: Tracker,
        clock: Callable[[], float],
        wake: Callable[[], None],
    ) -> None:
        self.me = me
        self._ledger = ledger
        self._tracker = tracker
        self._clock = clock
        self._wake = wake
        self.dead: set[str] = set()

    async def load(self) -> None:
        """Remember, across a restart, which peers were declared dead."""
        self.dead = set(await self._ledger.dead_peers())

    async def open(self, client: aiosmtplib.SMTP, address: str) -> PeerLink | None:
        """Say XSHADOW if the peer offers it; None when it is not a shadow-aware peer."""
        if not client.supports_extension("xshadow"):
            return None
        response = await client.execute_command(
            b"XSHADOW", self.me.name.encode(), self.me.incarnation.encode()
        )
        peer = parse_hello_reply(response.message) if response.code == 250 else None
        if peer is None:
            log.warning("peer %s refused XSHADOW: %s %s", address, response.code, response.message)
            return None
        # Shadows held under another incarnation of the peer go again, now: it lost its queue.
        held = await self._ledger.peer_answered(address, peer.name, peer.incarnation, self._clock())
        self._resubmitted(address, held, "new incarnation")
        if address in self.dead:
            self.dead.discard(address)
            await self._ledger.set_dead(address, False)
            log.warning("peer %s (%s) is alive again", peer.name, address)
        link = PeerLink(address, peer)
        await self._send_taken(client, link)
        return link

    async def _send_taken(self, client: aiosmtplib.SMTP, link: PeerLink) -> None:
        ids = await self._ledger.taken_ids(link.address, link.peer.incarnation)
        for start in range(0, len(ids), MAX_TAKEN_PER_COMMAND):
            chunk = ids[start : start + MAX_TAKEN_PER_COMMAND]
            response = await client.execute_command(b"XQTAKEN", *(i.encode() for i in chunk))
            if response.code == 250:
                await self._ledger.forget_taken(link.address, link.peer.incarnation, chunk)

    async def exchange_discards(self, client: aiosmtplib.SMTP, link: PeerLink) -> int:
        """Fetch discard notices, drop their shadows, acknowledge; returns shadows dropped."""
        state = await self._ledger.peer_state(link.address)
        ack = state[2] if state is not None and state[1] == link.peer.incarnation else 0
        dropped = 0
        while True:
            args = [str(DISCARD_BATCH).encode()] + ([f"ACK={ack}".encode()] if ack else [])
            response = await client.execute_command(b"XQDISCARD", *args)
            parsed = parse_discard_reply(response.message) if response.code == 250 else None
            if parsed is None:
                log.warning("XQDISCARD to %s: %s %s", link.address, response.code, response.message)
                return dropped
            ids, seq = parsed
            if ids:
                dropped += await self._apply(link, ids)
            if seq <= ack:
                return dropped
            # Commit first, then acknowledge: a lost reply loses nothing, duplicates nothing.
            await self._ledger.set_ack(link.address, link.peer.incarnation, seq)
            ack = seq
            if len(ids) < DISCARD_BATCH:
                await client.execute_command(b"XQDISCARD", b"0", f"ACK={ack}".encode())
                return dropped

    async def _apply(self, link: PeerLink, ids: list[str]) -> int:
        discarded, _ = await self._ledger.apply_discards(link.peer.incarnation, ids, self._clock())
        for item in discarded:
            record_discard(
                self._tracker,
                queue_id=item.queue_id,
                sender=item.sender,
                recipients=item.recipients,
                peer_address=link.address,
                peer_name=link.peer.name,
                peer_queue_id=item.peer_queue_id,
            )
        return len(discarded)

    async def resubmit(
        self, address: str, incarnation: str | None, *, reason: str, remember_taken: bool
    ) -> int:
        """Put the shadows held for a peer back into this node's queue."""
        held = await self._ledger.resubmit(
            address, incarnation, self._clock(), remember_taken=remember_taken
        )
        self._resubmitted(address, held, reason)
        return len(held)

    def _resubmitted(self, address: str, held: list[HeldShadow], reason: str) -> None:
        for shadow in held:
            self._tracker.record(
                TrackingEvent.RESUBMIT,
                queue_id=shadow.queue_id,
                sender="",
                recipients=list(shadow.recipients),
                next_hop=address,
                reply=f"{reason}: shadow of {shadow.peer_name} {shadow.peer_queue_id}",
            )
        if held:
            log.warning("resubmitted %d shadows held for %s (%s)", len(held), address, reason)
            self._wake()

    async def declare_dead(self, address: str) -> int:
        """The peer missed its heartbeats: route around it and resubmit its shadows."""
        self.dead.add(address)
        await self._ledger.set_dead(address, True)
        return await self.resubmit(address, None, reason="peer dead", remember_taken=True)
