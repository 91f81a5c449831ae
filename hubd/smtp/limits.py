"""Limits on what a client controls, and the node-wide counters that enforce some of them.

Owns: a listener's limits as one value, and the counters a node shares between its
sessions: sessions open, connections per client, each client's (and submission user's)
message rate, and each client's failed AUTHs.
Public: SessionLimits, session_limits(), Occupancy, NodeCounters (the interface),
LocalCounters, client_key().
Failures: none raised.
Limits: a client is its IPv4 address, or its IPv6 /64 (one host's usual share); the message
rate is a token bucket (a burst of `per_minute`, then `per_minute` a minute); LocalCounters
counts within one process: a node of several acceptor processes uses SharedCounters.
See also: hubd/smtp/session.py (the decisions), hubd/smtp/shared_counters.py, README (the
[smtp] limit keys).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Protocol

from hubd.config import SmtpConfig
from hubd.smtp.data import ContentLimits

_SWEEP_AFTER = 1024  # rate entries before the first sweep of idle clients
_MINUTE = 60.0


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """The limits of one listener's sessions (README: the [smtp] limit keys)."""

    content: ContentLimits
    max_recipients: int
    max_commands: int
    max_errors: int
    max_sessions: int
    max_connections_per_client: int
    max_messages_per_minute: int
    idle_timeout: float  # seconds waiting for the client's next bytes
    data_timeout: float  # seconds for the whole of DATA


def session_limits(smtp: SmtpConfig) -> SessionLimits:
    """The limits an `[smtp]` section sets."""
    return SessionLimits(
        content=ContentLimits(
            max_message_size=smtp.max_message_size,
            max_line_length=smtp.max_line_length,
            max_header_size=int(smtp.max_header_size),
            max_received_headers=smtp.max_received_headers,
        ),
        max_recipients=smtp.max_recipients,
        max_commands=smtp.max_commands_per_session,
        max_errors=smtp.max_errors,
        max_sessions=smtp.max_sessions,
        max_connections_per_client=smtp.max_connections_per_client,
        max_messages_per_minute=smtp.max_messages_per_minute_per_client,
        idle_timeout=smtp.idle_timeout.total_seconds(),
        data_timeout=smtp.data_timeout.total_seconds(),
    )


@dataclass(frozen=True, slots=True)
class Occupancy:
    """Open sessions after one more connected: on the node, and from that client."""

    sessions: int
    from_client: int


class NodeCounters(Protocol):
    """Counts shared by every session of a node; each call is short and never waits."""

    def connect(self, client: str) -> Occupancy:
        """Count a new connection from `client` (a client_key()) and say how full it is."""
        ...

    def disconnect(self, client: str) -> None:
        """Forget a connection counted by connect()."""
        ...

    def take_message(self, client: str, now: float, per_minute: int) -> bool:
        """Count a message from `client` at `now`; False when it is over its rate."""
        ...

    def auth_failures(self, client: str, now: float, window: float) -> int:
        """Failed AUTHs from `client` in the last `window` seconds."""
        ...

    def auth_failed(self, client: str, now: float, window: float) -> int:
        """Count a failed AUTH from `client`; the failures in the window, this one included."""
        ...


def client_key(ip: str) -> str:
    """The name per-client limits count under: an IPv4 address, or an IPv6 /64."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class LocalCounters:
    """NodeCounters kept in this process's memory."""

    def __init__(self) -> None:
        self._sessions = 0
        self._per_client: dict[str, int] = {}
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, as of)
        self._failures: dict[str, tuple[int, float]] = {}  # client -> (count, window start)
        self._sweep_at = _SWEEP_AFTER

    def connect(self, client: str) -> Occupancy:
        self._sessions += 1
        count = self._per_client.get(client, 0) + 1
        self._per_client[client] = count
        return Occupancy(self._sessions, count)

    def disconnect(self, client: str) -> None:
        count = self._per_client.get(client, 0)
        if count <= 0:
            return
        self._sessions -= 1
        if count == 1:
            del self._per_client[client]
        else:
            self._per_client[client] = count - 1

    def take_message(self, client: str, now: float, per_minute: int) -> bool:
        tokens, since = self._buckets.get(client, (float(per_minute), now))
        tokens = min(float(per_minute), tokens + max(0.0, now - since) * per_minute / _MINUTE)
        allowed = tokens >= 1.0
        self._buckets[client] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._buckets) >= self._sweep_at:
            self._sweep(now)
        return allowed

    def auth_failures(self, client: str, now: float, window: float) -> int:
        count, since = self._failures.get(client, (0, now))
        return count if now - since < window else 0

    def auth_failed(self, client: str, now: float, window: float) -> int:
        count = self.auth_failures(client, now, window)
        since = self._failures[client][1] if count else now
        self._failures[client] = (count + 1, since)
        if len(self._failures) >= _SWEEP_AFTER:
            self._failures = {
                key: state for key, state in self._failures.items() if now - state[1] < window
            }
        return count + 1

    def _sweep(self, now: float) -> None:
        # A client quiet for a minute has a full bucket again: its entry says nothing.
        self._buckets = {
            client: state for client, state in self._buckets.items() if now - state[1] < _MINUTE
        }
        self._sweep_at = max(_SWEEP_AFTER, 2 * len(self._buckets))
