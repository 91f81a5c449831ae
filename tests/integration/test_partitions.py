"""Partitions: nodes that keep running but cannot reach each other, made with FaultProxy.

A proxy's partition() holds every connection open with no byte passing, as a cut network
does (no reset, no refusal), until heal(). The line: A routes corp.test to [P1 -> B, M]
(M directly is A's way round a dead B), B routes it to [P2 -> M]; M, the mailstore, is the
final hop, which drops a second copy of an origin key (`DUPLICATE`). Each scenario ends
with every message the client got a 250 for in M's Maildir exactly once, and counts the
duplicates dropped on the way.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import smtplib
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hubd.node import Node
from hubd.testing import FaultProxy, async_wait_until, free_loopback_address, maildir_messages
from hubd.tracking import read_events
from tests.conftest import NodeFactory

pytestmark = pytest.mark.integration

# The default command timeout: only the heartbeat's own limit can end a stalled heartbeat.
STALL_PROOF = {"delivery": {"command_timeout": "5m"}}


def events(node: Node, event: str) -> list[dict[str, Any]]:
    tracking = node.config.node.data_dir / "tracking"
    return [e for e in read_events(tracking) if e["event"] == event] if tracking.exists() else []


def _send(node: Node, count: int, first: int = 0) -> None:
    address = node.relay_addresses[0]
    with smtplib.SMTP(address.host, address.port, local_hostname="client.test") as client:
        for n in range(first, first + count):
            data = f"Message-ID: <p-{n}@client.test>\r\n\r\n{n}\r\n".encode()
            client.sendmail("alice@client.test", ["bob@corp.test"], data)


async def send(node: Node, count: int, first: int = 0) -> None:
    await asyncio.to_thread(_send, node, count, first)


def delivered(node: Node) -> Counter[bytes]:
    """Message-IDs in bob's Maildir at `node`, counted."""
    return Counter(
        line
        for data in maildir_messages(node.config.mailbox_dir / "corp.test" / "bob").values()
        for line in data.split(b"\r\n")
        if line.startswith(b"Message-ID:")
    )


@dataclass
class Line:
    """A -> [P1 -> B, M]; B -> [P2 -> M]."""

    a: Node
    b: Node
    m: Node
    p1: FaultProxy
    p2: FaultProxy

    async def all_delivered_once(self, count: int) -> None:
        await async_wait_until(lambda: len(delivered(self.m)) >= count, 40, "every message at M")
        found = delivered(self.m)
        assert len(found) == count, f"lost {count - len(found)} of {count}"
        assert set(found.values()) == {1}, "a message delivered twice"

    def duplicates(self) -> int:
        """Second copies dropped: at M by origin key, at B by XQTAKEN."""
        return len(events(self.m, "DUPLICATE")) + len(events(self.b, "DUPLICATE"))


@contextlib.asynccontextmanager
async def line_of_nodes(start_node: NodeFactory) -> AsyncIterator[Line]:
    m = await start_node("m", local_domains=["corp.test"])
    m_hop = m.relay_addresses[0]
    b_host, _ = free_loopback_address()
    a_host, _ = free_loopback_address()
    p2_host, _ = free_loopback_address()
    async with FaultProxy(p2_host, m_hop.host, m_hop.port, source_host=b_host) as p2:
        b = await start_node(
            "b",
            address=(b_host, 0),
            routes=[{"domains": ["corp.test"], "next_hops": [p2.address]}],
        )
        b_hop = b.relay_addresses[0]
        p1_host, _ = free_loopback_address()
        async with FaultProxy(p1_host, b_hop.host, b_hop.port, source_host=a_host) as p1:
            a = await start_node(
                "a",
                address=(a_host, 0),
                routes=[{"domains": ["corp.test"], "next_hops": [p1.address, str(m_hop)]}],
            )
            try:
                yield Line(a, b, m, p1, p2)
            finally:
                p1.heal()
                p2.heal()


class TestStalledHeartbeat:
    async def test_stalled_heartbeats_count_as_missed(
        self, start_node: NodeFactory, tmp_path: Path
    ) -> None:
        """A next hop that stalls every session is declared dead after heartbeat_failures
        intervals, not after the command timeout."""
        nowhere = "{}:{}".format(*free_loopback_address())
        b = await start_node("b", routes=[{"domains": ["corp.test"], "next_hops": [nowhere]}])
        target = b.relay_addresses[0]
        host, _ = free_loopback_address()
        async with FaultProxy(host, target.host, target.port, source_host=host) as proxy:
            routes = [{"domains": ["corp.test"], "next_hops": [proxy.address]}]
            a = await start_node("a", routes=routes, **STALL_PROOF)
            await send(a, 2)
            await async_wait_until(lambda: len(events(a, "SHADOW")) >= 2, 20, "A's shadows")
            proxy.partition()
            cut_at = time.monotonic()
            # 3 misses of 1 s each, a round every 1 s: about 6 s; far below 5 minutes.
            await async_wait_until(lambda: len(events(a, "RESUBMIT")) >= 2, 20, "B dead")
            assert time.monotonic() - cut_at < 15
            proxy.heal()


class TestPartitionScenarios:
    async def test_upstream_cut_off_from_its_next_hop(self, start_node: NodeFactory) -> None:
        """A loses B while B still reaches M: A resubmits around B, B delivers too; M keeps
        one copy of each."""
        async with line_of_nodes(start_node) as line:
            line.p2.partition()  # B holds the mail for now
            await send(line.a, 3)
            await async_wait_until(lambda: len(events(line.a, "SHADOW")) >= 3, 20, "A's shadows")
            line.p1.partition()
            line.p2.heal()  # B delivers to M; A cannot hear of it
            await async_wait_until(lambda: len(events(line.a, "RESUBMIT")) >= 3, 20, "B dead")
            await line.all_delivered_once(3)
            await async_wait_until(lambda: line.duplicates() >= 3, 20, "the second copies")
            line.p1.heal()
            await line.all_delivered_once(3)

    async def test_next_hop_cut_off_past_the_heartbeat_limit_then_healed(
        self, start_node: NodeFactory
    ) -> None:
        """B cut off from A and M past heartbeat_failures, then healed: A's resubmitted copies
        and B's own reach M once between them."""
        async with line_of_nodes(start_node) as line:
            line.p2.partition()
            await send(line.a, 3)
            await async_wait_until(lambda: len(events(line.a, "SHADOW")) >= 3, 20, "A's shadows")
            line.p1.partition()
            await async_wait_until(lambda: len(events(line.a, "RESUBMIT")) >= 3, 20, "B dead")
            await line.all_delivered_once(3)  # by A, directly
            line.p1.heal()
            line.p2.heal()
            # B learns by XQTAKEN, or M by origin key, that its copies are second ones.
            await async_wait_until(lambda: line.duplicates() >= 3, 30, "B's copies dropped")
            await async_wait_until(
                lambda: (
                    not line.b.config.node.data_dir.joinpath("queue.db").exists()
                    or _queue_empty(line.b)
                ),
                30,
                "B's queue empty",
            )
            await line.all_delivered_once(3)

    async def test_flapping_link(self, start_node: NodeFactory) -> None:
        """A's link to B cut and healed at random while mail flows, some cuts past the
        heartbeat limit: each message once at M, and both queues drain."""
        rng = random.Random(12)
        async with line_of_nodes(start_node) as line:
            sent = 0
            for _ in range(5):
                line.p1.partition()
                await send(line.a, 2, first=sent)  # accepted by A whatever the link does
                sent += 2
                await asyncio.sleep(rng.uniform(0.5, 3.5))  # how long the cut lasts
                line.p1.heal()
                await send(line.a, 2, first=sent)
                sent += 2
                await asyncio.sleep(rng.uniform(0.2, 1.0))  # how long the link stays up
            await line.all_delivered_once(sent)
            await async_wait_until(
                lambda: _queue_empty(line.a) and _queue_empty(line.b), 30, "both queues empty"
            )
            await line.all_delivered_once(sent)


def _queue_empty(node: Node) -> bool:
    path = node.config.node.data_dir / "queue.db"
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return int(conn.execute("SELECT count(*) FROM messages").fetchone()[0]) == 0
    finally:
        conn.close()
