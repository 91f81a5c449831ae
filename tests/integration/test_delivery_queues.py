"""Per-next-hop delivery queues: connection reuse, a dead hop waits, others go on."""

from __future__ import annotations

import asyncio
import smtplib
import socket
import threading
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from hubd.node import Node
from hubd.testing import async_wait_until, free_loopback_address, maildir_messages
from hubd.tracking import read_events
from tests.conftest import NodeFactory

pytestmark = pytest.mark.integration


class _CountingSink:
    """An aiosmtpd server that counts connections and keeps the messages it gets."""

    def __init__(self) -> None:
        self.connections = 0
        self.messages: list[bytes] = []

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        self.connections += 1
        return responses

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.original_content, bytes)
        self.messages.append(envelope.original_content)
        return "250 2.0.0 sink took it"


def _send(node: Node, recipient: str, tag: str) -> None:
    address = node.relay_addresses[0]
    data = f"Subject: {tag}\r\nMessage-ID: <{tag}@a.test>\r\n\r\n{tag}\r\n".encode()
    with smtplib.SMTP(address.host, address.port, local_hostname="client.test", timeout=10) as c:
        c.sendmail("alice@a.test", [recipient], data)


def _events(node: Node, event: str) -> list[dict[str, Any]]:
    return [e for e in read_events(node.config.node.data_dir / "tracking") if e["event"] == event]


class _Blackhole:
    """Accepts connections and never answers: a next hop that hangs."""

    def __init__(self) -> None:
        host, _ = free_loopback_address()
        self._socket = socket.create_server((host, 0))
        self.address = f"{host}:{self._socket.getsockname()[1]}"
        self._held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                self._held.append(self._socket.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self._socket.close()
        for conn in self._held:
            conn.close()


class TestDeliveryQueues:
    async def test_connection_reused_for_the_same_hop(self, start_node: NodeFactory) -> None:
        """Five messages to one next hop, one after another, share one SMTP connection."""
        sink = _CountingSink()
        host, _ = free_loopback_address()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(sink, hostname="sink.test", ident="sink"), host=host, port=0
        )
        port = server.sockets[0].getsockname()[1]
        try:
            a = await start_node(
                "a", routes=[{"domains": ["corp.test"], "next_hops": [f"{host}:{port}"]}]
            )
            for n in range(5):
                await asyncio.to_thread(_send, a, "bob@corp.test", f"m{n}")
                await async_wait_until(lambda n=n: len(sink.messages) == n + 1, 15, f"message {n}")
            assert sink.connections == 1
        finally:
            server.close()
            await server.wait_closed()

    async def test_a_connection_the_hop_closed_is_replaced(self, start_node: NodeFactory) -> None:
        """A kept connection the next hop closed while idle is replaced at once: the next
        message goes out on a new connection, without a deferral."""
        sink = _CountingSink()
        closed = asyncio.Event()

        class _ClosingSMTP(SMTP):
            def connection_lost(self, error: Exception | None) -> None:
                super().connection_lost(error)
                closed.set()

        host, _ = free_loopback_address()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _ClosingSMTP(sink, hostname="sink.test", ident="sink", timeout=1),
            host=host,
            port=0,
        )
        port = server.sockets[0].getsockname()[1]
        try:
            a = await start_node(
                "a", routes=[{"domains": ["corp.test"], "next_hops": [f"{host}:{port}"]}]
            )
            await asyncio.to_thread(_send, a, "bob@corp.test", "before")
            await async_wait_until(lambda: len(sink.messages) == 1, 15, "the first message")
            await asyncio.wait_for(closed.wait(), 15)  # the sink's idle timeout closed it
            await asyncio.to_thread(_send, a, "bob@corp.test", "after")
            await async_wait_until(lambda: len(sink.messages) == 2, 15, "the second message")
            assert sink.connections == 2
            assert _events(a, "DEFER") == []
        finally:
            server.close()
            await server.wait_closed()

    async def test_dead_hop_waits_and_does_not_hold_back_others(
        self, start_node: NodeFactory
    ) -> None:
        """While one next hop hangs, local mail is delivered; a hop known down is not retried."""
        blackhole = _Blackhole()
        dead, _ = free_loopback_address()
        try:
            a = await start_node(
                "a",
                local_domains=["a.test"],
                routes=[
                    {"domains": ["slow.test"], "next_hops": [blackhole.address]},
                    {"domains": ["down.test"], "next_hops": [f"{dead}:2525"]},
                ],
                delivery={"concurrency_per_hop": 2, "command_timeout": "1m", "tls": "off"},
                queue={"retry": ["1h"]},
            )
            for n in range(4):
                await asyncio.to_thread(_send, a, f"u{n}@slow.test", f"slow{n}")
            await asyncio.to_thread(_send, a, "alice@a.test", "local")
            box = a.config.mailbox_dir / "a.test" / "alice"
            await async_wait_until(lambda: maildir_messages(box), 15, "local delivery")

            await asyncio.to_thread(_send, a, "x@down.test", "down1")
            await async_wait_until(lambda: _events(a, "DEFER"), 15, "the first DEFER")
            await asyncio.to_thread(_send, a, "y@down.test", "down2")
            defers = await async_wait_until(
                lambda: len(_events(a, "DEFER")) >= 2 and _events(a, "DEFER"), 15, "second DEFER"
            )
            first, second = defers[:2]
            assert first["reply"].startswith("451 4.4.1 Connection to")
            assert second["reply"].endswith("(next hop down; not tried)")
        finally:
            blackhole.close()
