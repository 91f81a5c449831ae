"""The downstream side of XSHADOW on the wire: who may use it, and every refusal."""

from __future__ import annotations

import asyncio
import smtplib
import time
from typing import Any

import pytest

from hubd.node import Node
from hubd.testing import async_wait_until, free_loopback_address, maildir_messages
from hubd.tracking import read_events
from tests.conftest import NodeFactory

pytestmark = pytest.mark.integration

UPSTREAM = "up-1 0123456789abcdef"
OWN = "up-1.0123456789abcdef.Q1"  # an origin key of UPSTREAM's own


def _session(node: Node, commands: list[str], source: str | None = None) -> list[tuple[int, str]]:
    """Run commands after EHLO on one connection; every reply as (code, text)."""
    address = node.relay_addresses[0]
    bind = (source, 0) if source else None
    with smtplib.SMTP(
        address.host, address.port, local_hostname="up.test", timeout=10, source_address=bind
    ) as client:
        client.ehlo()
        return [(code, text.decode()) for code, text in map(client.docmd, commands)]


def _ehlo_features(node: Node, source: str | None = None) -> dict[str, str]:
    address = node.relay_addresses[0]
    bind = (source, 0) if source else None
    with smtplib.SMTP(address.host, address.port, timeout=10, source_address=bind) as client:
        client.ehlo()
        return dict(client.esmtp_features)


class TestNegotiation:
    async def test_peer_sees_xshadow_and_gets_identity(self, start_node: NodeFactory) -> None:
        """A peer sees XSHADOW 1 HOLD in EHLO; XSHADOW answers with the name and incarnation."""
        node = await start_node("d")
        assert node.database is not None
        assert (await asyncio.to_thread(_ehlo_features, node))["xshadow"] == "1 HOLD"
        ((code, text),) = await asyncio.to_thread(_session, node, [f"XSHADOW {UPSTREAM}"])
        assert code == 250
        assert text == f"2.0.0 XSHADOW d {node.database.incarnation}"

    async def test_non_peer_refused(self, start_node: NodeFactory) -> None:
        """A client outside [shadow] peers gets no XSHADOW in EHLO and 550 5.7.1 for the verb."""
        node = await start_node("d", shadow={"peers": ["127.0.0.1/32"]})
        source, _ = free_loopback_address()
        features = await asyncio.to_thread(_ehlo_features, node, source)
        assert "xshadow" not in features
        ((code, text),) = await asyncio.to_thread(_session, node, [f"XSHADOW {UPSTREAM}"], source)
        assert (code, text[:5]) == (550, "5.7.1")

    @pytest.mark.parametrize(
        ("commands", "expected"),
        [
            (["XSHADOW up-1"], (501, "5.5.4")),
            (["XSHADOW up-1 NOTHEX0123456789"], (501, "5.5.4")),
            ([f"XSHADOW {UPSTREAM}", f"XSHADOW {UPSTREAM}"], (503, "5.5.1")),
            (["XQDISCARD 10"], (503, "5.5.1")),
            ([f"XSHADOW {UPSTREAM}", "XQDISCARD ten"], (501, "5.5.4")),
            ([f"XSHADOW {UPSTREAM}", "XQDISCARD 10 ACK=5"], (501, "5.5.4")),
            (["MAIL FROM:<a@up.test> XORIGIN=up-1.0123456789abcdef.Q1"], (555, "5.5.4")),
            ([f"XSHADOW {UPSTREAM}", "MAIL FROM:<a@up.test> XORIGIN=bad"], (501, "5.5.4")),
            (["MAIL FROM:<a@up.test>", f"XSHADOW {UPSTREAM}"], (503, "5.5.1")),
            (["MAIL FROM:<a@up.test> XHOLD=127.0.0.1:2525"], (555, "5.5.4")),
            (
                [f"XSHADOW {UPSTREAM}", f"MAIL FROM:<a@up.test> XORIGIN={OWN} XHOLD=nowhere"],
                (501, "5.5.4"),
            ),
            (
                [f"XSHADOW {UPSTREAM}", "MAIL FROM:<a@up.test> XHOLD=127.0.0.1:2525"],
                (501, "5.5.4"),
            ),
            (
                [
                    f"XSHADOW {UPSTREAM}",
                    "MAIL FROM:<a@up.test> XORIGIN=other.0123456789abcdef.Q1 XHOLD=127.0.0.1:2525",
                ],
                (501, "5.5.4"),
            ),
        ],
        ids=[
            "missing-incarnation",
            "bad-incarnation",
            "twice",
            "discard-before-xshadow",
            "discard-bad-max",
            "ack-past-listed",
            "xorigin-without-xshadow",
            "malformed-xorigin",
            "inside-transaction",
            "xhold-without-xshadow",
            "malformed-xhold",
            "xhold-without-xorigin",
            "xhold-of-another-origin",
        ],
    )
    async def test_refusals(
        self, start_node: NodeFactory, commands: list[str], expected: tuple[int, str]
    ) -> None:
        """Each misuse of the verbs gets its own code, and the session goes on."""
        node = await start_node("d")
        replies = await asyncio.to_thread(_session, node, [*commands, "NOOP"])
        code, text = replies[-2]
        assert (code, text[:5]) == expected
        assert replies[-1][0] == 250

    async def test_no_notices_yet(self, start_node: NodeFactory) -> None:
        """XQDISCARD with nothing owed ends with SEQ=0 none; an old ACK does nothing."""
        node = await start_node("d")
        replies = await asyncio.to_thread(
            _session, node, [f"XSHADOW {UPSTREAM}", "XQDISCARD 10", "XQDISCARD 10 ACK=0"]
        )
        assert replies[1] == (250, "2.0.0 SEQ=0 none")
        assert replies[2] == (250, "2.0.0 SEQ=0 none")


class TestNoticesOnTheWire:
    async def test_notice_listed_then_acknowledged(self, start_node: NodeFactory) -> None:
        """A message from an upstream, once delivered, is listed by XQDISCARD until acknowledged."""
        node = await start_node("d", local_domains=["corp.test"])
        address = node.relay_addresses[0]

        def deliver_one() -> str:
            with smtplib.SMTP(address.host, address.port, local_hostname="up.test") as client:
                client.ehlo()
                assert client.docmd(f"XSHADOW {UPSTREAM}")[0] == 250
                client.mail("a@up.test", ["XORIGIN=up-1.0123456789abcdef.Q1"])
                client.rcpt("bob@corp.test")
                code, text = client.data(b"Subject: s\r\n\r\nshadowed\r\n")
                assert code == 250
                return text.decode().split()[1]

        queue_id = await asyncio.to_thread(deliver_one)
        box = node.config.mailbox_dir / "corp.test" / "bob"
        await async_wait_until(lambda: maildir_messages(box), 15, "delivery")

        async def listed() -> Any:
            replies = await asyncio.to_thread(
                _session, node, [f"XSHADOW {UPSTREAM}", "XQDISCARD 10"]
            )
            return "SEQ=1" in replies[1][1] and replies

        replies = await async_wait_until(listed, 15, "the notice")
        assert replies[1] == (250, f"2.0.0 ID={queue_id}\n2.0.0 SEQ=1")
        again = await asyncio.to_thread(
            _session, node, [f"XSHADOW {UPSTREAM}", "XQDISCARD 10 ACK=1", "XQDISCARD 10"]
        )
        assert again[1] == (250, "2.0.0 SEQ=1 none")
        assert again[2] == (250, "2.0.0 SEQ=0 none")
        received = [e for e in read_events(node.config.node.data_dir / "tracking")]
        assert any(e["event"] == "DELIVER" for e in received)

    async def test_new_upstream_incarnation_drops_old_notices(
        self, start_node: NodeFactory
    ) -> None:
        """When the upstream comes back with a new incarnation, notices owed to the old go."""
        node = await start_node("d", local_domains=["corp.test"])
        address = node.relay_addresses[0]

        def deliver_one() -> None:
            with smtplib.SMTP(address.host, address.port, local_hostname="up.test") as client:
                client.ehlo()
                client.docmd(f"XSHADOW {UPSTREAM}")
                client.sendmail("a@up.test", ["bob@corp.test"], b"Subject: s\r\n\r\nx\r\n")

        await asyncio.to_thread(deliver_one)
        assert node.ledger is not None

        async def owed() -> bool:
            return await node.ledger.owed_notices() == 1  # type: ignore[union-attr]

        await async_wait_until(owed, 15, "one notice owed")
        replies = await asyncio.to_thread(
            _session, node, ["XSHADOW up-1 fedcba9876543210", "XQDISCARD 10"]
        )
        assert replies[1] == (250, "2.0.0 SEQ=0 none")
        assert await node.ledger.owed_notices() == 0


def _plain_send(node: Node) -> None:
    address = node.relay_addresses[0]
    with smtplib.SMTP(address.host, address.port, timeout=10) as client:
        client.sendmail("s@a.test", ["r@x.test"], b"Subject: p\r\n\r\nplain\r\n")


class TestPlainPeers:
    async def test_non_hubd_next_hop_gets_plain_smtp(self, start_node: NodeFactory) -> None:
        """A next hop without XSHADOW gets no XSHADOW verbs, and A forgets the message at 250."""
        from aiosmtpd.smtp import SMTP

        seen: list[str] = []

        class Sink:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                seen.append(" ".join(envelope.mail_options))
                return "250 2.0.0 taken"

        host, _ = free_loopback_address()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: SMTP(Sink(), hostname="sink"), host=host, port=0)
        port = server.sockets[0].getsockname()[1]
        try:
            a = await start_node(
                "a", routes=[{"domains": ["x.test"], "next_hops": [f"{host}:{port}"]}]
            )
            await asyncio.to_thread(_plain_send, a)
            await async_wait_until(lambda: seen, 15, "the sink's message")
            assert "XORIGIN" not in seen[0]

            async def empty() -> bool:
                return not await a.repository.list_messages()  # type: ignore[union-attr]

            await async_wait_until(empty, 15, "A to forget it")
            assert not [
                e
                for e in read_events(a.config.node.data_dir / "tracking")
                if e["event"] == "SHADOW"
            ]
        finally:
            server.close()
            await server.wait_closed()


class TestDelayedAck:
    async def test_250_waits_for_the_message_to_leave(self, start_node: NodeFactory) -> None:
        """A plain client of a delayed_ack node gets its 250 only once the message has left."""
        dead, _ = free_loopback_address()
        b = await start_node("b", local_domains=["corp.test"])
        a = await start_node(
            "a",
            routes=[
                {"domains": ["corp.test"], "next_hops": [f"{dead}:2525", str(b.relay_addresses[0])]}
            ],
            smtp={
                "listen": ["127.0.0.1:0"],
                "delayed_ack": True,
                "max_ack_delay": "20s",
                "trusted_networks": ["127.0.0.0/8"],
            },
        )
        address = a.relay_addresses[0]

        def timed_send() -> tuple[float, float]:
            with smtplib.SMTP(address.host, address.port, timeout=30) as client:
                client.ehlo()
                client.mail("s@a.test")
                client.rcpt("bob@corp.test")
                started = time.monotonic()
                code, _ = client.data(b"Subject: d\r\n\r\ndelayed\r\n")
                assert code == 250
                return started, time.monotonic()

        await asyncio.to_thread(timed_send)
        box = b.config.mailbox_dir / "corp.test" / "bob"
        # By the time the client had its 250, B already held the message (shadowed by A).
        events = [e for e in read_events(a.config.node.data_dir / "tracking")]
        assert [e["event"] for e in events if e["event"] in ("SEND", "SHADOW")][:2] == [
            "SEND",
            "SHADOW",
        ]
        await async_wait_until(lambda: maildir_messages(box), 15, "delivery at B")

    async def test_250_after_max_ack_delay(self, start_node: NodeFactory) -> None:
        """When the message cannot leave, the 250 comes after max_ack_delay, not never."""
        dead, _ = free_loopback_address()
        a = await start_node(
            "a",
            routes=[{"domains": ["corp.test"], "next_hops": [f"{dead}:2525"]}],
            smtp={
                "listen": ["127.0.0.1:0"],
                "delayed_ack": True,
                "max_ack_delay": "2s",
                "trusted_networks": ["127.0.0.0/8"],
            },
            queue={"retry": ["1h"]},
        )
        address = a.relay_addresses[0]

        def timed_send() -> float:
            with smtplib.SMTP(address.host, address.port, timeout=30) as client:
                client.ehlo()
                client.mail("s@a.test")
                client.rcpt("bob@corp.test")
                started = time.monotonic()
                code, _ = client.data(b"Subject: d\r\n\r\nstuck\r\n")
                assert code == 250
                return time.monotonic() - started

        waited = await asyncio.to_thread(timed_send)
        assert waited >= 2.0
        (queued,) = await a.repository.list_messages()  # type: ignore[union-attr]
        assert queued.recipients[0].state == "PENDING"
