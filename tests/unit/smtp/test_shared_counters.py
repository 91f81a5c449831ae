"""Node-wide client counters in shared memory: what one acceptor counts, every one sees."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from hubd.smtp.shared_counters import SharedCounters, counters_file

KEY = bytes(range(16))


@pytest.fixture
def fd() -> Iterator[int]:
    descriptor = counters_file(3)
    yield descriptor
    os.close(descriptor)


def acceptors(fd: int, count: int = 3) -> list[SharedCounters]:
    return [SharedCounters(fd, region, count, KEY) for region in range(count)]


class TestConnections:
    def test_counted_across_acceptors(self, fd: int) -> None:
        """Connections from one client on different acceptors add up, on the node too."""
        a, b, c = acceptors(fd)
        assert a.connect("192.0.2.1").from_client == 1
        assert b.connect("192.0.2.1").from_client == 2
        occupancy = c.connect("192.0.2.1")
        assert (occupancy.sessions, occupancy.from_client) == (3, 3)
        assert a.connect("192.0.2.9").from_client == 1  # another client is its own count

    def test_disconnect_forgets(self, fd: int) -> None:
        """A closed connection no longer counts, on the node or for its client."""
        a, b, _ = acceptors(fd)
        a.connect("192.0.2.1")
        b.connect("192.0.2.1")
        a.disconnect("192.0.2.1")
        assert b.connect("192.0.2.1").from_client == 2
        assert b.connect("192.0.2.2").sessions == 3

    def test_disconnect_of_what_was_never_counted(self, fd: int) -> None:
        """A disconnect with no connect behind it does not go below zero."""
        a, _, _ = acceptors(fd)
        a.disconnect("192.0.2.1")
        assert a.connect("192.0.2.1").from_client == 1
        assert a.connect("192.0.2.2").sessions == 2

    def test_a_replaced_acceptor_starts_clean(self, fd: int) -> None:
        """What a dead acceptor counted goes when its successor takes the region."""
        a, b, _ = acceptors(fd)
        for _ in range(5):
            b.connect("192.0.2.1")
        SharedCounters(fd, 1, 3, KEY)  # b's replacement
        assert a.connect("192.0.2.1").from_client == 1

    def test_many_clients_do_not_inflate_each_other(self, fd: int) -> None:
        """With a thousand other clients connected, a new one counts as itself alone."""
        a, b, _ = acceptors(fd)
        for n in range(1000):
            (a if n % 2 else b).connect(f"10.0.{n // 250}.{n % 250}")
        assert a.connect("192.0.2.1").from_client == 1

    def test_region_out_of_range(self, fd: int) -> None:
        """A region the file does not have is refused."""
        with pytest.raises(ValueError, match="region 3 of 3"):
            SharedCounters(fd, 3, 3, KEY)


class TestMessageRate:
    def test_limit_is_node_wide(self, fd: int) -> None:
        """Messages a client sends through any acceptor count against one rate."""
        a, b, c = acceptors(fd)
        now = 6000.0
        taken = [x.take_message("192.0.2.1", now, 6) for x in (a, b, c, a, b, c)]
        assert taken == [True] * 6
        assert not a.take_message("192.0.2.1", now, 6)
        assert not b.take_message("192.0.2.1", now, 6)
        assert a.take_message("192.0.2.2", now, 6)

    def test_the_window_slides(self, fd: int) -> None:
        """The last minute weighs less as the current one goes on, and nothing after two."""
        a, b, _ = acceptors(fd)
        start = 6000.0  # the start of a minute
        for _ in range(10):
            assert a.take_message("192.0.2.1", start, 10)
        assert not b.take_message("192.0.2.1", start + 30, 10)  # the same minute: full
        # Half way into the next minute, the last minute's 10 weigh 5.
        allowed = sum(b.take_message("192.0.2.1", start + 90, 10) for _ in range(10))
        assert allowed == 5
        assert a.take_message("192.0.2.1", start + 200, 10)  # two minutes on: a clean slate


class TestAuthFailures:
    def test_counted_across_acceptors(self, fd: int) -> None:
        """Failed AUTHs on different acceptors add up for their client, and only for it."""
        a, b, c = acceptors(fd)
        assert a.auth_failed("192.0.2.1", 1000.0, 600) == 1
        assert b.auth_failed("192.0.2.1", 1001.0, 600) == 2
        assert c.auth_failed("192.0.2.1", 1002.0, 600) == 3
        assert a.auth_failures("192.0.2.1", 1003.0, 600) == 3
        assert a.auth_failures("192.0.2.2", 1003.0, 600) == 0

    def test_the_window_ends(self, fd: int) -> None:
        """A window opens at the first failure; once it has passed, the count starts again."""
        a, b, _ = acceptors(fd)
        a.auth_failed("192.0.2.1", 1000.0, 600)
        b.auth_failed("192.0.2.1", 1500.0, 600)
        assert a.auth_failures("192.0.2.1", 1599.0, 600) == 2
        assert a.auth_failures("192.0.2.1", 1700.0, 600) == 1  # a's window has passed
        assert a.auth_failed("192.0.2.1", 1700.0, 600) == 2  # a new one on a, b's still open
        assert b.auth_failures("192.0.2.1", 2200.0, 600) == 1
