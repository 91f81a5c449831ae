"""Delayed acknowledgement: hold a plain sender's 250 until its message has left the node.

Owns: waiting, per queue id, for the scheduler to report that no recipient of a message is
still pending here (delivered, failed with its DSN queued, or handed to a peer that holds
a shadow), bounded by `max_ack_delay`.
Public: Departures.
Limits: in memory; a node that restarts forgets who was waiting (those clients have lost
their connection anyway and will retry).
See also: docs/xshadow.md (Delayed acknowledgement), delivery/scheduler.py (reports).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


class Departures:
    """Events that fire when messages leave the node."""

    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Event] = {}

    def expect(self, queue_id: str) -> None:
        """Start watching a message (before it is committed, so no departure is missed)."""
        self._waiting.setdefault(queue_id, asyncio.Event())

    def left(self, queue_ids: Iterable[str]) -> None:
        """The scheduler's report: these messages have left."""
        for queue_id in queue_ids:
            event = self._waiting.get(queue_id)
            if event is not None:
                event.set()

    async def wait(self, queue_id: str, limit: float) -> bool:
        """Wait until the message left, at most `limit` seconds; True when it did."""
        event = self._waiting.setdefault(queue_id, asyncio.Event())
        try:
            async with asyncio.timeout(limit):
                await event.wait()
            return True
        except TimeoutError:
            return False
        finally:
            self._waiting.pop(queue_id, None)

    def forget(self, queue_id: str) -> None:
        self._waiting.pop(queue_id, None)
