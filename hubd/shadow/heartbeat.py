"""Heartbeats to peers that hold this node's shadows, and the expiry of old shadow state.

Owns: a session to each such peer every `heartbeat_interval` (EHLO, XSHADOW, XQDISCARD);
declaring a peer dead after `heartbeat_failures` missed in a row (its shadows are
resubmitted); probing dead peers until they answer again; `auto_discard` and `dedup_window`.
Public: Heartbeat.
Failures: none raised from the loop; a failed session is a missed heartbeat.
See also: shadow/client.py, docs/xshadow.md (Heartbeats and failure).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import aiosmtplib

from hubd.shadow.client import ShadowClient
from hubd.tracking import Tracker, TrackingEvent
from storage.errors import log_failure
from storage.shadows import ShadowLedger

log = logging.getLogger(__name__)

Connect = Callable[[str], Awaitable[aiosmtplib.SMTP]]


class Heartbeat:
    """The loop that keeps shadows honest."""

    def __init__(
        self,
        *,
        ledger: ShadowLedger,
        shadow: ShadowClient,
        connect: Connect,
        tracker: Tracker,
        clock: Callable[[], float],
        interval: float,
        failures: int,
        auto_discard: float,
        dedup_window: float,
    ) -> None:
        self._ledger = ledger
        self._shadow = shadow
        self._connect = connect
        self._tracker = tracker
        self._clock = clock
        self._interval = interval
        self._failures = failures
        self._auto_discard = auto_discard
        self._dedup_window = dedup_window
        self.missed: dict[str, int] = {}
        self._stop = asyncio.Event()

    def stop(self) -> None:
        """Let run() return after the round in progress."""
        self._stop.set()

    async def run(self) -> None:
        """Heartbeat every peer that holds shadows of ours, every interval, until stop()."""
        while not self._stop.is_set():
            try:
                async with asyncio.timeout(self._interval):
                    await self._stop.wait()
                return
            except TimeoutError:
                pass
            try:
                await self.beat_all()
                await self._expire()
            except Exception as error:
                log_failure(log, "heartbeat round", error)

    async def beat_all(self) -> None:
        """One heartbeat to every peer that needs one, concurrently."""
        targets = await self._ledger.heartbeat_targets()
        await asyncio.gather(*(self._beat(address) for address in targets))

    async def _beat(self, address: str) -> None:
        # The whole session within one interval: a stalled peer is a miss, not a 5 min wait.
        try:
            async with asyncio.timeout(self._interval):
                client = await self._connect(address)
                try:
                    await client.ehlo()
                    link = await self._shadow.open(client, address)
                    if link is not None:
                        await self._shadow.exchange_discards(client, link)
                finally:
                    client.close()
        except Exception as error:  # any failed session is a missed heartbeat
            missed = self.missed.get(address, 0) + 1
            self.missed[address] = missed
            log.info("heartbeat to %s missed (%d in a row): %s", address, missed, error)
            if missed >= self._failures and address not in self._shadow.dead:
                log.warning("peer %s missed %d heartbeats: declared dead", address, missed)
                await self._shadow.declare_dead(address)
            return
        self.missed[address] = 0

    async def _expire(self) -> None:
        expired = await self._ledger.expire(
            now=self._clock(), auto_discard=self._auto_discard, dedup_window=self._dedup_window
        )
        for shadow in expired:
            self._tracker.record(
                TrackingEvent.DISCARD,
                queue_id=shadow.queue_id,
                sender="",
                recipients=list(shadow.recipients),
                next_hop=shadow.peer_address,
                reply="auto_discard: no notice arrived in time",
            )
