"""The SMTP glue on the wire: the connection's life, its reader, EOF and pipelining.

hubd/smtp/server.py is a plain asyncio protocol: connection_made() starts the session as a
task and connection_lost() cancels it; the reader's limit is the longest line; an EOF after
pipelined commands loses none of them; bytes the client sent after the end of DATA are its
next commands.
"""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from hubd.node import Node
from hubd.smtp.server import HubSMTP
from hubd.testing import async_wait_until, free_loopback_address
from tests.conftest import NodeFactory
from tests.integration.rawsmtp import RawClient

pytestmark = pytest.mark.integration

LOCAL = {"local_domains": ["corp.test"]}


def live(node: Node) -> set[HubSMTP]:
    assert node._inbound is not None
    return node._inbound.live


async def enqueued(node: Node) -> int:
    assert node.repository is not None
    return (await node.repository.stats()).get("ops:enqueue", 0)


class TestInternals:
    async def test_greeting_comes_from_hubds_session(self, start_node: NodeFactory) -> None:
        """connection_made() runs hubd's session: the banner is hubd's own."""
        node = await start_node()
        client = await RawClient.connect(node.relay_addresses[0])
        reply = await client.command("HELP")
        assert reply.line.startswith("214 2.0.0 Supported commands:")
        (connection,) = live(node)
        # The reader's buffer is sized to the longest line a client may send.
        assert connection._reader._limit == node.config.smtp.max_line_length
        await client.close()
        await async_wait_until(lambda: not live(node), 10, "the session to end")

    async def test_connection_lost_ends_the_session(self, start_node: NodeFactory) -> None:
        """A reset mid-DATA cancels the session: it leaves, its place is free, nothing is kept."""
        node = await start_node(smtp={"max_sessions": 1}, **LOCAL)
        client = await RawClient.connect(node.relay_addresses[0])
        for line in ("EHLO c.test", "MAIL FROM:<a@outside.test>", "RCPT TO:<bob@corp.test>"):
            await client.command(line)
        assert (await client.command("DATA")).code == 354
        await client.send(b"Subject: cut\r\n\r\nhalf")
        sock = client.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.writer.transport.abort()  # an RST, not a FIN
        await async_wait_until(lambda: not live(node), 10, "the session to end")
        second = await RawClient.connect(node.relay_addresses[0])  # max_sessions = 1
        await second.close()
        assert await enqueued(node) == 0

    async def test_idle_timer_waits_for_the_client_only(self, start_node: NodeFactory) -> None:
        """A reply the node is slow to give outlives idle_timeout: only the client is timed."""
        dead, _ = free_loopback_address()
        node = await start_node(
            routes=[{"domains": ["corp.test"], "next_hops": [f"{dead}:2525"]}],
            smtp={"idle_timeout": "1s", "delayed_ack": True, "max_ack_delay": "3s"},
            queue={"retry": ["1h"]},
        )
        client = await RawClient.connect(node.relay_addresses[0])
        for line in ("EHLO c.test", "MAIL FROM:<a@outside.test>", "RCPT TO:<bob@corp.test>"):
            await client.command(line)
        await client.command("DATA")
        await client.send(b"Subject: slow ack\r\n\r\nbody\r\n.\r\n")
        # hubd's idle timer is not running while the node holds the reply, so the 250
        # arrives after max_ack_delay, past idle_timeout.
        reply = await client.response(within=15)
        assert reply.line.startswith("250 2.0.0 "), reply
        assert (await client.command("NOOP")).code == 250
        await client.close()

    async def test_eof_after_pipelined_commands(self, start_node: NodeFactory) -> None:
        """A client that sends a whole transaction and QUIT, then EOF, gets every reply."""
        node = await start_node(**LOCAL)
        reader, writer = await RawClient.open(node.relay_addresses[0])
        writer.write(
            b"EHLO c.test\r\nMAIL FROM:<a@outside.test>\r\nRCPT TO:<bob@corp.test>\r\nDATA\r\n"
            b"Subject: eof\r\n\r\nbody\r\n.\r\nQUIT\r\n"
        )
        writer.write_eof()
        async with asyncio.timeout(10):
            received = await reader.read()
        lines = received.decode().splitlines()
        assert lines[0].startswith("220 ")
        codes = [line[:4] for line in lines if line[3] == " "]
        assert codes == ["220 ", "250 ", "250 ", "250 ", "354 ", "250 ", "221 "], lines
        assert await enqueued(node) == 1
        writer.close()

    async def test_commands_pipelined_after_data(self, start_node: NodeFactory) -> None:
        """Two transactions and QUIT in one write: the bytes after the first message's end
        (which the DATA reader took in the same chunk) are read as the next commands."""
        node = await start_node(**LOCAL)
        reader, writer = await RawClient.open(node.relay_addresses[0])
        one = b"MAIL FROM:<a@outside.test>\r\nRCPT TO:<bob@corp.test>\r\nDATA\r\n"
        writer.write(
            b"EHLO c.test\r\n"
            + one
            + b"Subject: 1\r\n\r\n1\r\n.\r\n"
            + one
            + b"Subject: 2\r\n\r\n2\r\n.\r\nQUIT\r\n"
        )
        async with asyncio.timeout(10):
            received = await reader.read()
        codes = [line[:4] for line in received.decode().splitlines() if line[3] == " "]
        assert codes == ["220 ", "250 ", *["250 ", "250 ", "354 ", "250 "] * 2, "221 "], codes
        assert await enqueued(node) == 2
        writer.close()

    async def test_listen_backlog(self, start_node: NodeFactory) -> None:
        """smtp.listen_backlog is the listening socket's backlog."""
        node = await start_node(smtp={"listen_backlog": 77})
        (listener,) = node.listeners
        (sock,) = listener.server.sockets
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        ss = await asyncio.create_subprocess_exec(
            "ss", "-Hltn", f"src = {listener.address}", stdout=asyncio.subprocess.PIPE
        )
        out, _ = await ss.communicate()
        # For a listening socket, ss shows the backlog as Send-Q.
        (row,) = out.decode().splitlines()
        assert row.split()[2] == "77", row
