"""Partitions: nodes that keep running but cannot reach each other, made with FaultProxy.

A routes corp.test through a proxy to B. The proxy's partition() holds every connection
open with no byte passing, as a cut network does (no reset, no refusal), until heal().
"""

from __future__ import annotations

import asyncio
import smtplib
import time
from pathlib import Path
from typing import Any

import pytest

from hubd.node import Node
from hubd.testing import FaultProxy, async_wait_until, free_loopback_address
from hubd.tracking import read_events
from tests.conftest import NodeFactory

pytestmark = pytest.mark.integration

# The default command timeout: only the heartbeat's own limit can end a stalled heartbeat.
STALL_PROOF = {"delivery": {"command_timeout": "5m"}}


def events(node: Node, event: str) -> list[dict[str, Any]]:
    tracking = node.config.node.data_dir / "tracking"
    return [e for e in read_events(tracking) if e["event"] == event] if tracking.exists() else []


def _send(node: Node, count: int) -> None:
    address = node.relay_addresses[0]
    with smtplib.SMTP(address.host, address.port, local_hostname="client.test") as client:
        for n in range(count):
            data = f"Message-ID: <p-{n}@client.test>\r\n\r\n{n}\r\n".encode()
            client.sendmail("alice@client.test", ["bob@corp.test"], data)


async def send(node: Node, count: int) -> None:
    await asyncio.to_thread(_send, node, count)


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
