"""Idle outbound SMTP connections kept for the next message to the same host.

Owns: a small pool per host address: take a live, recent connection, give one back after a
transaction, close them all at shutdown.
Public: ConnectionPool.
Limits: a connection idle longer than `max_idle` seconds is closed rather than reused (well
under the 5 minutes servers usually wait, RFC 5321 4.5.3.2.7); at most `per_host` are kept.
"""

from __future__ import annotations

from collections.abc import Callable

import aiosmtplib

from hubd.config import HostPort


class ConnectionPool:
    """Idle aiosmtplib clients by host."""

    def __init__(self, clock: Callable[[], float], max_idle: float = 30.0, per_host: int = 10):
        self._clock = clock
        self._max_idle = max_idle
        self._per_host = per_host
        self._idle: dict[HostPort, list[tuple[aiosmtplib.SMTP, float]]] = {}
        self.reused = 0

    def take(self, host: HostPort) -> aiosmtplib.SMTP | None:
        """A connected client to `host` that is fresh enough, or None."""
        idle = self._idle.get(host, [])
        now = self._clock()
        while idle:
            client, since = idle.pop()
            if client.is_connected and now - since < self._max_idle:
                self.reused += 1
                return client
            client.close()
        return None

    def give(self, host: HostPort, client: aiosmtplib.SMTP) -> None:
        """Keep a client after a finished transaction (or close it when the pool is full)."""
        idle = self._idle.setdefault(host, [])
        if not client.is_connected or len(idle) >= self._per_host:
            client.close()
            return
        idle.append((client, self._clock()))

    async def close(self) -> None:
        """QUIT every idle connection."""
        idle, self._idle = self._idle, {}
        for clients in idle.values():
            for client, _ in clients:
                try:
                    await client.quit()
                except (aiosmtplib.SMTPException, OSError):
                    client.close()
