"""Shadow before acknowledgement (`[shadow] before_ack`): a copy on a peer before the 250.

A accepts mail from a plain client for corp.test, routed to the mailstore M; B is A's
redundancy peer. With "require", A's 250 means B holds a copy (as a shadow of A's primary),
so A's disk may go right after it; with no peer, the client gets 451 4.4.0 and nothing
stays; with "prefer", A accepts anyway and logs UNPROTECTED.
"""

from __future__ import annotations

import asyncio
import shutil
import smtplib
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from hubd.node import Node
from hubd.testing import (
    FaultProxy,
    NodeProcess,
    async_wait_until,
    free_loopback_address,
    maildir_messages,
    wait_until,
    write_config,
)
from hubd.tracking import read_events
from tests.conftest import NodeFactory, merge, node_settings

pytestmark = pytest.mark.integration

COUNT = 5


def message(n: int) -> bytes:
    return f"Message-ID: <ba-{n}@client.test>\r\n\r\nbody {n}\r\n".encode()


def delivered(mailbox_root: Path) -> Counter[bytes]:
    """Message-IDs in bob's Maildir, counted."""
    return Counter(
        line
        for data in maildir_messages(mailbox_root / "corp.test" / "bob").values()
        for line in data.split(b"\r\n")
        if line.startswith(b"Message-ID:")
    )


def count_events(data_dir: Path, event: str) -> int:
    tracking = data_dir / "tracking"
    found = read_events(tracking) if tracking.exists() else []
    return sum(1 for e in found if e["event"] == event)


def query(data_dir: Path, sql: str) -> int:
    conn = sqlite3.connect(f"file:{data_dir / 'queue.db'}?mode=ro", uri=True, timeout=10)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


class Trio:
    """A, B and the mailstore M as node processes."""

    def __init__(self, root: Path, before_ack: str) -> None:
        self.root = root
        self.addresses = {name: free_loopback_address() for name in ("a", "b", "m")}
        self.nodes: dict[str, NodeProcess] = {}
        route = {"routes": [{"domains": ["corp.test"], "next_hops": [self.hop("m")]}]}
        self._write("m", {"local_domains": ["corp.test"]})
        self._write("b", route)
        shadow = {"before_ack": before_ack, "redundancy_peers": [self.hop("b")]}
        self._write("a", merge(route, {"shadow": shadow}))

    def hop(self, name: str) -> str:
        return "{}:{}".format(*self.addresses[name])

    def _write(self, name: str, overrides: dict[str, Any]) -> None:
        host, port = self.addresses[name]
        settings = merge(node_settings(self.root / name, name, host, port), overrides)
        config = write_config(self.root / f"{name}.toml", settings)
        self.nodes[name] = NodeProcess(config, (host, port), self.root / f"{name}.log")


class TestRequire:
    def test_accepting_hub_wiped_after_250_loses_nothing(self, tmp_path: Path) -> None:
        """With require, A's data directory deleted right after the 250s: every message is
        delivered once, from B's copies."""
        trio = Trio(tmp_path, "require")
        nodes = trio.nodes
        try:
            nodes["b"].start()
            nodes["a"].start()
            with smtplib.SMTP(*trio.addresses["a"], local_hostname="client.test") as client:
                for n in range(COUNT):
                    client.sendmail("alice@client.test", ["bob@corp.test"], message(n))
            nodes["a"].kill()
            shutil.rmtree(tmp_path / "a")  # A's disk is gone; M was down all along
            assert query(tmp_path / "b", "SELECT count(*) FROM shadows") == COUNT
            nodes["m"].start()
            wait_until(
                lambda: len(delivered(tmp_path / "m" / "mailboxes")) >= COUNT, 30, "all at M"
            )
            wait_until(
                lambda: query(tmp_path / "b", "SELECT count(*) FROM messages") == 0, 30, "B done"
            )
            assert set(delivered(tmp_path / "m" / "mailboxes").values()) == {1}
        finally:
            for node in nodes.values():
                node.kill()


def _send_each(address: tuple[str, int], count: int) -> list[tuple[int, bytes]]:
    """Send `count` messages on one session; the end-of-DATA reply of each."""
    out = []
    with smtplib.SMTP(*address, local_hostname="client.test", timeout=30) as client:
        client.ehlo()
        for n in range(count):
            client.mail("alice@client.test")
            client.rcpt("bob@corp.test")
            out.append(client.data(message(n)))
    return out


async def send_each(node: Node, count: int) -> list[tuple[int, bytes]]:
    relay = node.relay_addresses[0]
    return await asyncio.to_thread(_send_each, (relay.host, relay.port), count)


def nowhere() -> str:
    return "{}:{}".format(*free_loopback_address())


class TestNoPeer:
    async def test_require_with_no_peer_answers_451_and_keeps_nothing(
        self, start_node: NodeFactory
    ) -> None:
        """With require and no reachable peer, each DATA gets 451 4.4.0 and the queue and
        mailbox stay empty."""
        shadow = {
            "before_ack": "require",
            "redundancy_peers": [nowhere(), nowhere()],
            "before_ack_timeout": "2s",
        }
        a = await start_node("a", local_domains=["corp.test"], shadow=shadow)
        replies = await send_each(a, 2)
        assert [code for code, _ in replies] == [451, 451]
        assert all(
            text.startswith(b"4.4.0 Message failed to be made redundant") for _, text in replies
        )
        data_dir = a.config.node.data_dir
        assert query(data_dir, "SELECT count(*) FROM messages") == 0
        assert delivered(a.config.mailbox_dir) == Counter()

    async def test_prefer_with_no_peer_accepts_and_counts_unprotected(
        self, start_node: NodeFactory
    ) -> None:
        """With prefer and no reachable peer, mail is accepted and delivered, one UNPROTECTED
        event per message."""
        shadow = {"before_ack": "prefer", "redundancy_peers": [nowhere()]}
        a = await start_node("a", local_domains=["corp.test"], shadow=shadow)
        replies = await send_each(a, 3)
        assert [code for code, _ in replies] == [250, 250, 250]
        data_dir = a.config.node.data_dir
        assert count_events(data_dir, "UNPROTECTED") == 3
        await async_wait_until(
            lambda: len(delivered(a.config.mailbox_dir)) == 3, 20, "delivered at A"
        )


class TestCopyAtNextHop:
    async def test_next_hop_drops_its_copy_when_the_primary_arrives(
        self, start_node: NodeFactory
    ) -> None:
        """B, both A's redundancy peer and its next hop, keeps the primary and drops the
        redundancy copy of the same origin key."""
        b = await start_node("b", routes=[{"domains": ["corp.test"], "next_hops": [nowhere()]}])
        b_hop = str(b.relay_addresses[0])
        a = await start_node(
            "a",
            routes=[{"domains": ["corp.test"], "next_hops": [b_hop]}],
            shadow={"before_ack": "require", "redundancy_peers": [b_hop]},
        )
        replies = await send_each(a, 2)
        # With "require" a 250 means B took the copy: what B holds later is what it kept.
        assert [code for code, _ in replies] == [250, 250]
        b_dir = b.config.node.data_dir
        await async_wait_until(
            lambda: count_events(a.config.node.data_dir, "SHADOW") == 2, 20, "A's hand-offs to B"
        )
        a_relay = str(a.relay_addresses[0])
        held = f"SELECT count(*) FROM shadows WHERE peer_address = '{a_relay}'"
        assert query(b_dir, held) == 0
        assert query(b_dir, "SELECT count(*) FROM messages") == 2  # the primaries, waiting


class TestStalledPeer:
    async def test_a_stalled_peer_leaves_time_for_the_next(self, start_node: NodeFactory) -> None:
        """The first redundancy peer cut off (silent, not closed): copies go to the second
        within before_ack_timeout, and every DATA still gets its 250."""
        b1 = await start_node("b1")
        b2 = await start_node("b2")
        target = b1.relay_addresses[0]
        a_host, _ = free_loopback_address()
        proxy_host, _ = free_loopback_address()
        async with FaultProxy(proxy_host, target.host, target.port, source_host=a_host) as proxy:
            shadow = {
                "before_ack": "require",
                "redundancy_peers": [proxy.address, str(b2.relay_addresses[0])],
                "before_ack_timeout": "3s",
            }
            a = await start_node(
                "a", address=(a_host, 0), local_domains=["corp.test"], shadow=shadow
            )
            assert [code for code, _ in await send_each(a, 1)] == [250]  # B1 holds it
            proxy.partition()
            assert [code for code, _ in await send_each(a, 2)] == [250, 250]
            proxy.heal()
        assert count_events(b1.config.node.data_dir, "RECEIVE") == 1
        assert count_events(b2.config.node.data_dir, "RECEIVE") == 2
