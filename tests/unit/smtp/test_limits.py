"""Node-wide counters: sessions, connections per client, and each client's message rate."""

from __future__ import annotations

import pytest

from hubd.config import parse_config
from hubd.smtp.limits import LocalCounters, Occupancy, client_key, session_limits

NOW = 1_700_000_000.0


class TestClientKey:
    @pytest.mark.parametrize(
        ("ip", "key"),
        [
            ("192.0.2.1", "192.0.2.1"),
            ("::ffff:192.0.2.1", "192.0.2.1"),
            ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
            ("2001:db8:1:2::9", "2001:db8:1:2::/64"),
            ("fe80::1%eth0", "fe80::/64"),
            ("not an address", "not an address"),
        ],
        ids=["ipv4", "mapped", "ipv6", "same-64", "scoped", "unparsable"],
    )
    def test_key(self, ip: str, key: str) -> None:
        """IPv4 addresses count alone; an IPv6 /64 counts as one client."""
        assert client_key(ip) == key


class TestConnections:
    def test_counts_and_releases(self) -> None:
        """connect() counts node-wide and per client; disconnect() gives the place back."""
        counters = LocalCounters()
        assert counters.connect("a") == Occupancy(1, 1)
        assert counters.connect("a") == Occupancy(2, 2)
        assert counters.connect("b") == Occupancy(3, 1)
        counters.disconnect("a")
        counters.disconnect("a")
        assert counters.connect("a") == Occupancy(2, 1)

    def test_disconnect_unknown_is_harmless(self) -> None:
        """A disconnect with no connect leaves the counts alone."""
        counters = LocalCounters()
        counters.disconnect("a")
        assert counters.connect("b") == Occupancy(1, 1)


class TestMessageRate:
    def test_burst_then_rate(self) -> None:
        """A burst of per_minute messages, then one each 60/per_minute seconds."""
        counters = LocalCounters()
        assert all(counters.take_message("a", NOW, 6) for _ in range(6))
        assert not counters.take_message("a", NOW, 6)
        assert not counters.take_message("a", NOW + 9, 6)
        assert counters.take_message("a", NOW + 10, 6)
        assert not counters.take_message("a", NOW + 10, 6)
        assert counters.take_message("b", NOW, 6), "another client has its own bucket"

    def test_full_again_after_a_minute(self) -> None:
        """A minute of quiet refills the whole burst, and no more."""
        counters = LocalCounters()
        for _ in range(6):
            counters.take_message("a", NOW, 6)
        later = NOW + 3600
        assert sum(counters.take_message("a", later, 6) for _ in range(10)) == 6

    def test_clock_going_back(self) -> None:
        """A clock stepped back refills nothing."""
        counters = LocalCounters()
        for _ in range(6):
            counters.take_message("a", NOW, 6)
        assert not counters.take_message("a", NOW - 100, 6)

    def test_idle_clients_are_forgotten(self) -> None:
        """Memory stays bounded: quiet clients' entries are swept."""
        counters = LocalCounters()
        for n in range(5000):
            counters.take_message(f"c{n}", NOW + n, 600)
        assert len(counters._buckets) < 2100


def test_session_limits_from_config() -> None:
    """Every [smtp] limit key reaches the session limits, sizes and durations converted."""
    smtp = parse_config(
        {
            "smtp": {
                "max_header_size": "2KiB",
                "data_timeout": "1m",
                "idle_timeout": "30s",
                "max_commands_per_session": 7,
                "max_errors": 3,
                "max_connections_per_client": 4,
                "max_messages_per_minute_per_client": 5,
            }
        }
    ).smtp
    limits = session_limits(smtp)
    assert limits.content.max_header_size == 2048
    assert (limits.data_timeout, limits.idle_timeout) == (60.0, 30.0)
    assert (limits.max_commands, limits.max_errors) == (7, 3)
    assert (limits.max_connections_per_client, limits.max_messages_per_minute) == (4, 5)
    assert limits.max_sessions == 1000
