"""Back pressure in a running node: its levels from real measures, what each refuses."""

from __future__ import annotations

import pytest

from hubd import replies
from hubd.backpressure import Level
from hubd.node import Node
from hubd.testing import async_wait_until
from hubd.tracking import read_events
from tests.conftest import NodeFactory
from tests.integration.rawsmtp import RawClient

pytestmark = pytest.mark.integration

BUSY = f"{replies.INSUFFICIENT_RESOURCES.code} {replies.INSUFFICIENT_RESOURCES.enhanced} "
OUTSIDE = "127.0.0.5"  # a loopback address the nodes below do not trust
FAR = {"routes": [{"domains": ["far.test"], "next_hops": ["127.0.0.1:9"]}]}  # never answers


async def _client(node: Node, source: str | None = None) -> RawClient:
    client = await RawClient.connect(node.relay_addresses[0], source)
    assert (await client.command("EHLO client.test")).code == 250
    return client


async def test_medium_refuses_outsiders_and_pauses_pickup(start_node: NodeFactory) -> None:
    """One queued recipient past queued_medium: an untrusted client gets 452 4.3.1 at MAIL,
    the node's own address still sends, pickup pauses; removing it brings Normal back."""
    node = await start_node(
        "bp",
        **FAR,
        smtp={"trusted_networks": ["127.0.0.0/30"]},  # 127.0.0.1 yes, 127.0.0.5 no
        shadow={"peers": ["127.0.0.0/30"]},
        backpressure={"queued_medium": 1, "queued_high": 0},
    )
    trusted = await _client(node, "127.0.0.1")
    assert (await trusted.command("MAIL FROM:<a@outside.test>")).code == 250
    assert (await trusted.command("RCPT TO:<b@far.test>")).code == 250
    assert (await trusted.command("DATA")).code == 354
    reply = await trusted.command(b"Subject: one\r\n\r\nx\r\n.")
    assert reply.code == 250
    queue_id = reply.line.split()[2].strip("<>")
    await async_wait_until(lambda: node.pressure() is Level.MEDIUM, 10, "Medium")
    outsider = await _client(node, OUTSIDE)
    assert (await outsider.command("MAIL FROM:<a@outside.test>")).line.startswith(BUSY)
    assert (await trusted.command("MAIL FROM:<a@outside.test>")).code == 250
    assert node.pickup is not None
    assert node.pickup.paused

    assert await node.repository.remove(queue_id, 0.0)
    await async_wait_until(lambda: node.pressure() is Level.NORMAL, 10, "Normal again")
    assert not node.pickup.paused
    assert (await outsider.command("MAIL FROM:<a@outside.test>")).code == 250
    events = [
        e for e in read_events(node.config.node.data_dir / "tracking") if e["event"] == "PRESSURE"
    ]
    assert [(e["resource"], e["level"]) for e in events] == [
        ("queued", "Medium"),
        ("queued", "Normal"),
    ]
    await trusted.close()
    await outsider.close()


async def test_bytes_in_flight_go_high_and_come_back(start_node: NodeFactory) -> None:
    """A DATA of 64 KiB in progress puts inflight_high = 32KiB over: a second client is
    refused at MAIL; the first still gets its 250, and the count returns to zero."""
    node = await start_node(
        "fl", **FAR, backpressure={"inflight_medium": "16KiB", "inflight_high": "32KiB"}
    )
    first = await _client(node)
    assert (await first.command("MAIL FROM:<a@outside.test>")).code == 250
    assert (await first.command("RCPT TO:<b@far.test>")).code == 250
    assert (await first.command("DATA")).code == 354
    await first.send(b"Subject: big\r\n\r\n" + (b"x" * 1022 + b"\r\n") * 64)
    await async_wait_until(lambda: node.inflight >= 64 * 1024, 10, "64 KiB in flight")
    await async_wait_until(lambda: node.pressure() is Level.HIGH, 10, "High")
    second = await _client(node)
    assert (await second.command("MAIL FROM:<a@outside.test>")).line.startswith(BUSY)

    assert (await first.command(b".")).code == 250
    assert node.inflight == 0
    await async_wait_until(lambda: node.pressure() is Level.NORMAL, 10, "Normal again")
    assert (await second.command("MAIL FROM:<a@outside.test>")).code == 250
    await first.close()
    await second.close()
