"""Idle outbound SMTP connections kept for the next message to the same host.

Owns: a small pool per host address: take a live, recent connection, give one back after a
transaction, close them all at shutdown.
Public: ConnectionPool.
Limits: a connection idle longer than `max_idle` seconds is closed rather than reused (well
under the 5 minutes servers usually wait, RFC 5321 4.5.3.2.7); at most `per_host` are kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import aiosmtplib

from hubd.config import HostPort
from hubd.shadow.client import PeerLink


@dataclass(frozen=True, slots=True)
class Outbound:
    """An open outbound session: the client, and its XSHADOW link when the peer has one."""

    client: aiosmtplib.SMTP
    link: PeerLink | None = None


class ConnectionPool:
    """Idle aiosmtplib clients by host."""

    def __init__(self, clock: Callable[[], float], max_idle: float = 30.0, per_host: int = 10):
        self._clock = clock
        self._max_idle = max_idle
        self._per_host = per_host
        self._idle: dict[HostPort, list[tuple[Outbound, float]]] = {}
        self.reused = 0

    def take(self, host: HostPort) -> Outbound | None:
        """A connected session to `host` that is fresh enough, or None."""
        idle = self._idle.get(host, [])
        now = self._clock()
        while idle:
            outbound, since = idle.pop()
            if outbound.client.is_connected and now - since < self._max_idle:
                self.reused += 1
                return outbound
            outbound.client.close()
        return None

    def give(self, host: HostPort, outbound: Outbound) -> None:
        """Keep a session after a finished transaction (or close it when the pool is full)."""
        idle = self._idle.setdefault(host, [])
        if not outbound.client.is_connected or len(idle) >= self._per_host:
            outbound.client.close()
            return
        idle.append((outbound, self._clock()))

    async def close(self) -> None:
        """QUIT every idle connection."""
        idle, self._idle = self._idle, {}
        for sessions in idle.values():
            for outbound, _ in sessions:
                try:
                    await outbound.client.quit()
                except (aiosmtplib.SMTPException, OSError):
                    outbound.client.close()
