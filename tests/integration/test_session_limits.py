"""Limits on what a client controls, on the wire: the right code, and everyone else served.

Clients connect from loopback addresses of their own, outside the node's trusted networks
(which are only 127.0.0.1 here), so per-client limits apply to them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from hubd.node import Node
from hubd.testing import async_wait_until, free_loopback_address
from tests.conftest import NodeFactory
from tests.integration.rawsmtp import RawClient

pytestmark = pytest.mark.integration

UNTRUSTED = {"local_domains": ["corp.test"], "smtp": {"trusted_networks": ["127.0.0.1/32"]}}


def settings(**smtp: object) -> dict[str, object]:
    return {**UNTRUSTED, "smtp": {**UNTRUSTED["smtp"], **smtp}}  # type: ignore[dict-item]


def new_address() -> str:
    return free_loopback_address()[0]


@contextlib.asynccontextmanager
async def client(node: Node, source: str) -> AsyncIterator[RawClient]:
    connection = await RawClient.connect(node.relay_addresses[0], source)
    try:
        yield connection
    finally:
        await connection.close()


async def submit(node: Node, source: str, subject: str = "ok") -> str:
    """A whole good transaction from `source`; the reply to the end of DATA."""
    async with client(node, source) as c:
        for line in ("EHLO c.test", "MAIL FROM:<a@outside.test>", "RCPT TO:<bob@corp.test>"):
            reply = await c.command(line)
            assert reply.code == 250, (line, reply)
        assert (await c.command("DATA")).code == 354
        await c.send(f"Subject: {subject}\r\n\r\nbody\r\n.\r\n".encode())
        return (await c.response()).line


async def refused_at_greeting(node: Node, source: str) -> bytes:
    """Connect and read everything the server says before it closes."""
    reader, writer = await RawClient.open(node.relay_addresses[0], source)
    try:
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()


async def enqueued(node: Node) -> int:
    assert node.repository is not None
    return (await node.repository.stats()).get("ops:enqueue", 0)


class TestConnections:
    async def test_per_client(self, start_node: NodeFactory) -> None:
        """Past max_connections_per_client one address gets 421 4.7.0; another is served."""
        node = await start_node(**settings(max_connections_per_client=2))
        greedy = new_address()
        async with client(node, greedy), client(node, greedy):
            said = await refused_at_greeting(node, greedy)
            assert said.startswith(b"421 4.7.0 "), said
            assert (await submit(node, new_address())).startswith("250 2.0.0 ")
        # Its places are given back when its sessions end.
        await async_wait_until(lambda: not node._inbound.live, 10, "sessions to end")  # type: ignore[union-attr]
        assert (await submit(node, greedy)).startswith("250 2.0.0 ")

    async def test_trusted_are_exempt(self, start_node: NodeFactory) -> None:
        """A client in trusted_networks is not held to the per-client limit."""
        trusted = new_address()
        node = await start_node(
            **settings(max_connections_per_client=1, trusted_networks=[f"{trusted}/32"])
        )
        async with client(node, trusted), client(node, trusted), client(node, trusted):
            assert (await submit(node, trusted)).startswith("250 2.0.0 ")

    async def test_sessions(self, start_node: NodeFactory) -> None:
        """Past max_sessions on the node, a new session gets 421 4.7.0."""
        node = await start_node(**settings(max_sessions=2))
        async with client(node, new_address()), client(node, new_address()):
            said = await refused_at_greeting(node, new_address())
            assert said.startswith(b"421 4.7.0 "), said


class TestSessionLimits:
    async def test_commands(self, start_node: NodeFactory) -> None:
        """Past max_commands_per_session (NOOPs count), 421 4.7.0 and the connection ends."""
        node = await start_node(**settings(max_commands_per_session=20))
        async with client(node, new_address()) as c:
            for _ in range(20):
                assert (await c.command("NOOP")).code == 250
            reply = await c.command("NOOP")
            assert reply.line.startswith("421 4.7.0 "), reply
            assert await c.expect_closed() == b""

    async def test_errors(self, start_node: NodeFactory) -> None:
        """Past max_errors refused commands, 421 4.7.0 and the connection ends."""
        node = await start_node(**settings(max_errors=3))
        async with client(node, new_address()) as c:
            assert (await c.command("EHLO c.test")).code == 250
            for _ in range(3):
                assert (await c.command("MAIL FROM:bad")).line.startswith("501 5.1.7 ")
            reply = await c.command("MAIL FROM:bad")
            assert reply.line.startswith("421 4.7.0 "), reply
            assert await c.expect_closed() == b""

    async def test_header_size(self, start_node: NodeFactory) -> None:
        """A header section over max_header_size gets 552 5.3.4; nothing is queued."""
        node = await start_node(**settings(max_header_size="1KiB"))
        async with client(node, new_address()) as c:
            for line in ("EHLO c.test", "MAIL FROM:<a@outside.test>", "RCPT TO:<bob@corp.test>"):
                await c.command(line)
            await c.command("DATA")
            await c.send(
                b"X-Big: " + b"h" * 70 + b"\r\n" + b" folded\r\n" * 200 + b"\r\nbody\r\n.\r\n"
            )
            reply = await c.response()
            assert reply.line.startswith("552 5.3.4 "), reply
            assert (await c.command("NOOP")).code == 250
        assert await enqueued(node) == 0

    async def test_message_rate(self, start_node: NodeFactory) -> None:
        """Past its message rate an address gets 421 4.7.0 at MAIL; others still send."""
        node = await start_node(**settings(max_messages_per_minute_per_client=2))
        busy = new_address()
        for n in range(2):
            assert (await submit(node, busy, f"m{n}")).startswith("250 2.0.0 ")
        async with client(node, busy) as c:
            await c.command("EHLO c.test")
            reply = await c.command("MAIL FROM:<a@outside.test>")
            assert reply.line.startswith("421 4.7.0 "), reply
        assert (await submit(node, new_address())).startswith("250 2.0.0 ")
        assert await enqueued(node) == 3

    async def test_data_timeout(self, start_node: NodeFactory) -> None:
        """DATA that trickles past data_timeout gets 421 4.4.2; the partial message is dropped."""
        node = await start_node(**settings(data_timeout="2s", idle_timeout="1m"))
        async with client(node, new_address()) as c:
            for line in ("EHLO c.test", "MAIL FROM:<a@outside.test>", "RCPT TO:<bob@corp.test>"):
                await c.command(line)
            await c.command("DATA")
            closed = asyncio.ensure_future(c.expect_closed(within=30))
            # A line every 0.2 s keeps the idle timer from firing; only data_timeout ends it.
            while not closed.done():
                with contextlib.suppress(ConnectionError):
                    await c.send(b"trickle\r\n")
                await asyncio.wait([closed], timeout=0.2)
            assert closed.result().startswith(b"421 4.4.2 "), closed.result()
        assert await enqueued(node) == 0


class TestSlowLoris:
    async def test_one_address_cannot_starve_another(self, start_node: NodeFactory) -> None:
        """An address holding every session it may, each trickling bytes, does not stop others."""
        node = await start_node(
            **settings(max_connections_per_client=5, max_sessions=20, idle_timeout="2s")
        )
        loris = new_address()
        held = [await RawClient.connect(node.relay_addresses[0], loris) for _ in range(5)]
        closed = [asyncio.ensure_future(c.expect_closed(within=15)) for c in held]

        async def trickle(connection: RawClient, done: asyncio.Future[bytes]) -> None:
            # One byte at a time, never a line end: a read that never completes.
            while not done.done():
                with contextlib.suppress(ConnectionError):
                    await connection.send(b"X")
                await asyncio.wait([done], timeout=0.3)

        trickling = [
            asyncio.ensure_future(trickle(c, d)) for c, d in zip(held, closed, strict=True)
        ]
        try:
            said = await refused_at_greeting(node, loris)
            assert said.startswith(b"421 4.7.0 "), said
            assert (await submit(node, new_address(), "despite")).startswith("250 2.0.0 ")
            # The loris's own sessions end at their idle timeout, each with 421 4.4.2.
            for rest in await asyncio.gather(*closed):
                assert rest.startswith(b"421 4.4.2 "), rest
        finally:
            await asyncio.gather(*trickling)
            for connection in held:
                await connection.close()
        await async_wait_until(lambda: not node._inbound.live, 10, "sessions to end")  # type: ignore[union-attr]
