"""Delivery by MX through a real DNS server on loopback, with the three IPv6 modes."""

from __future__ import annotations

import asyncio
import smtplib
import socket
from pathlib import Path
from typing import Any

import pytest

from hubd.dns_server import DnsServer, Fault
from hubd.node import Node
from hubd.testing import async_wait_until, free_loopback_address, maildir_messages
from hubd.tracking import read_events
from tests.conftest import NodeFactory

pytestmark = pytest.mark.integration


def _free_port_on(*hosts: str) -> int:
    """A port free on every given host (so one MX port serves IPv4 and IPv6 alike)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = probe.getsockname()[1]
        try:
            for host in hosts[1:]:
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                with socket.socket(family) as other:
                    other.bind((host, port))
        except OSError:
            continue
        return port
    raise OSError("no common free port")


def _send(node: Node, recipient: str, tag: str = "m") -> None:
    address = node.relay_addresses[0]
    data = (
        f"From: a@corp.test\r\nTo: {recipient}\r\nSubject: {tag}\r\n"
        f"Message-ID: <{tag}@corp.test>\r\n\r\nbody {tag}\r\n"
    ).encode()
    with smtplib.SMTP(address.host, address.port, local_hostname="client.test", timeout=10) as c:
        c.sendmail("a@corp.test", [recipient], data)


async def _outside(start_node: NodeFactory, port: int, *extra: str) -> Node:
    """The outside world's MX host: a node that keeps example.test in Maildir."""
    host, _ = free_loopback_address()
    listen = [f"{host}:{port}", *(f"[{h}]:{port}" if ":" in h else f"{h}:{port}" for h in extra)]
    return await start_node(
        "outside",
        address=(host, port),
        local_domains=["example.test"],
        smtp={"listen": listen, "trusted_networks": ["127.0.0.0/8", "::1/128"]},
    )


def _sender_settings(dns: DnsServer, port: int, ipv6: str) -> dict[str, Any]:
    return {
        "dns": {"nameservers": [dns.address], "ipv6": ipv6, "timeout": "2s"},
        "delivery": {"mx_port": port, "tls": "off"},
    }


def _events(node: Node, event: str) -> list[dict[str, Any]]:
    return [e for e in read_events(node.config.node.data_dir / "tracking") if e["event"] == event]


def _inbox(node: Node, local: str = "bob") -> dict[Path, bytes]:
    return maildir_messages(node.config.mailbox_dir / "example.test" / local)


async def _mx_world(
    start_node: NodeFactory, dns_server: DnsServer, aaaa_fault: Fault
) -> tuple[Node, int]:
    """example.test's MX host, found by MX and A, whose AAAA queries fail as told."""
    port = _free_port_on("127.0.0.1")
    outside = await _outside(start_node, port)
    ip = outside.relay_addresses[0].host
    dns_server.load(
        f"example.test. 60 IN MX 10 mx1.example.test.\nmx1.example.test. 60 IN A {ip}\n"
    )
    dns_server.set_fault("mx1.example.test", "AAAA", aaaa_fault)
    return outside, port


class TestIpv6Modes:
    async def test_strict_defers_then_fallback_delivers(
        self, start_node: NodeFactory, dns_server: DnsServer
    ) -> None:
        """strict: MX and A resolve, AAAA SERVFAILs, so 451 4.4.0; fallback then delivers."""
        outside, port = await _mx_world(start_node, dns_server, Fault.SERVFAIL)
        hub = await start_node("hub", **_sender_settings(dns_server, port, "strict"))
        await asyncio.to_thread(_send, hub, "bob@example.test", "v6")

        defers = await async_wait_until(lambda: _events(hub, "DEFER"), 15, "a DEFER")
        assert defers[0]["reply"] == "451 4.4.0 DNS query failed"
        (queued,) = await hub.repository.list_messages()  # type: ignore[union-attr]
        assert queued.recipients[0].last_error == "451 4.4.0 DNS query failed"
        asked = {(q.name, q.qtype) for q in dns_server.queries}
        assert {
            ("example.test.", "MX"),
            ("mx1.example.test.", "A"),
            ("mx1.example.test.", "AAAA"),
        } <= asked
        assert not _inbox(outside)

        address = hub.relay_addresses[0]
        await hub.stop()
        hub2 = await start_node(
            "hub",
            address=(address.host, address.port),
            **_sender_settings(dns_server, port, "fallback"),
        )
        (data,) = (await async_wait_until(lambda: _inbox(outside), 15, "delivery")).values()
        assert f"[{address.host}]".encode() in data  # came over IPv4 from the hub's own address
        sends = _events(hub2, "SEND")
        assert sends[0]["recipients"] == ["bob@example.test"]

    async def test_off_never_asks_for_aaaa(
        self, start_node: NodeFactory, dns_server: DnsServer
    ) -> None:
        """off: only MX and A are asked, and the message is delivered over IPv4."""
        outside, port = await _mx_world(start_node, dns_server, Fault.SERVFAIL)
        hub = await start_node("hub", **_sender_settings(dns_server, port, "off"))
        await asyncio.to_thread(_send, hub, "bob@example.test")
        await async_wait_until(lambda: _inbox(outside), 15, "delivery")
        assert all(q.qtype != "AAAA" for q in dns_server.queries)

    @pytest.mark.parametrize("fault", [Fault.SERVFAIL, Fault.REFUSED, Fault.DROP])
    async def test_fallback_survives_aaaa_faults(
        self, start_node: NodeFactory, dns_server: DnsServer, fault: Fault
    ) -> None:
        """fallback: whatever way AAAA fails, A is used and the message is delivered."""
        outside, port = await _mx_world(start_node, dns_server, fault)
        hub = await start_node("hub", **_sender_settings(dns_server, port, "fallback"))
        await asyncio.to_thread(_send, hub, "bob@example.test")
        await async_wait_until(lambda: _inbox(outside), 15, "delivery")
        assert not _events(hub, "DEFER")

    @pytest.mark.parametrize("mode", ["fallback", "strict"])
    async def test_ipv6_first_when_aaaa_resolves(
        self, start_node: NodeFactory, dns_server: DnsServer, mode: str
    ) -> None:
        """With AAAA records, fallback and strict connect over IPv6 first."""
        host, _ = free_loopback_address()
        port = _free_port_on(host, "::1")
        outside = await _outside(start_node, port, "::1")
        ip = outside.relay_addresses[0].host
        dns_server.load(
            f"example.test. 60 IN MX 10 mx1.example.test.\n"
            f"mx1.example.test. 60 IN A {ip}\nmx1.example.test. 60 IN AAAA ::1\n"
        )
        hub = await start_node(
            "hub",
            smtp={"listen": [f"{host}:0"], "trusted_networks": ["127.0.0.0/8", "::1/128"]},
            **_sender_settings(dns_server, port, mode),
        )
        await asyncio.to_thread(_send, hub, "bob@example.test")
        (data,) = (await async_wait_until(lambda: _inbox(outside), 15, "delivery")).values()
        assert b"([IPv6:::1])" in data


class TestMxChoice:
    async def test_preference_order_and_failover(
        self, start_node: NodeFactory, dns_server: DnsServer
    ) -> None:
        """The lowest preference is tried first; when it refuses connections, the next gets it."""
        port = _free_port_on("127.0.0.1")
        outside = await _outside(start_node, port)
        ip = outside.relay_addresses[0].host
        dead, _ = free_loopback_address()  # nothing listens there
        dns_server.load(
            "example.test. 60 IN MX 20 mx2.example.test.\n"
            "example.test. 60 IN MX 10 mx1.example.test.\n"
            f"mx1.example.test. 60 IN A {dead}\nmx2.example.test. 60 IN A {ip}\n"
        )
        hub = await start_node("hub", **_sender_settings(dns_server, port, "off"))
        await asyncio.to_thread(_send, hub, "bob@example.test")
        await async_wait_until(lambda: _inbox(outside), 15, "delivery via mx2")
        a_queries = [q.name for q in dns_server.queries if q.qtype == "A"]
        assert a_queries.index("mx1.example.test.") < a_queries.index("mx2.example.test.")
        (send,) = _events(hub, "SEND")
        assert send["remote"] == f"{ip}:{port}"

    async def test_implicit_mx(self, start_node: NodeFactory, dns_server: DnsServer) -> None:
        """A domain with no MX but an A record is its own mail exchanger (RFC 5321 5.1)."""
        port = _free_port_on("127.0.0.1")
        outside = await _outside(start_node, port)
        ip = outside.relay_addresses[0].host
        dns_server.load(f"example.test. 60 IN A {ip}\n")
        hub = await start_node("hub", **_sender_settings(dns_server, port, "off"))
        await asyncio.to_thread(_send, hub, "bob@example.test")
        await async_wait_until(lambda: _inbox(outside), 15, "delivery by implicit MX")

    @pytest.mark.parametrize(
        ("zone", "reply"),
        [
            ("other.test. 60 IN A 127.0.0.9\n", "550 5.1.2 Recipient domain does not exist"),
            ("example.test. 60 IN MX 0 .\n", "556 5.1.10 Recipient address has null MX"),
        ],
        ids=["nxdomain", "null-mx"],
    )
    async def test_permanent_dns_failures(
        self, start_node: NodeFactory, dns_server: DnsServer, zone: str, reply: str
    ) -> None:
        """NXDOMAIN and null MX fail the recipient at once, with no retry."""
        dns_server.load(zone)
        hub = await start_node("hub", **_sender_settings(dns_server, 25, "fallback"))
        await asyncio.to_thread(_send, hub, "bob@example.test")
        fails = await async_wait_until(lambda: _events(hub, "FAIL"), 15, "a FAIL")
        assert fails[0]["recipients"] == ["bob@example.test"]
        assert fails[0]["reply"] == reply
        (dsn,) = _events(hub, "DSN")
        assert dsn["queue_id"] == fails[0]["queue_id"]
        assert dsn["recipients"] == ["bob@example.test"]
        assert not [e for e in _events(hub, "DEFER") if e["queue_id"] == fails[0]["queue_id"]]

    async def test_mx_servfail_is_temporary(
        self, start_node: NodeFactory, dns_server: DnsServer
    ) -> None:
        """A SERVFAIL for the MX query defers the recipient."""
        dns_server.load("example.test. 60 IN A 127.0.0.9\n")
        dns_server.set_fault("example.test", "MX", Fault.SERVFAIL)
        hub = await start_node("hub", **_sender_settings(dns_server, 25, "fallback"))
        await asyncio.to_thread(_send, hub, "bob@example.test")
        defers = await async_wait_until(lambda: _events(hub, "DEFER"), 15, "a DEFER")
        assert defers[0]["reply"].startswith("451 4.4.3")


def _send_many(node: Node, recipients: list[str], tag: str) -> None:
    """One message per recipient, on one connection."""
    address = node.relay_addresses[0]
    with smtplib.SMTP(address.host, address.port, local_hostname="client.test", timeout=10) as c:
        for n, recipient in enumerate(recipients):
            data = (
                f"From: a@corp.test\r\nTo: {recipient}\r\nSubject: {tag}{n}\r\n"
                f"Message-ID: <{tag}{n}@corp.test>\r\n\r\nbody {tag}{n}\r\n"
            ).encode()
            c.sendmail("a@corp.test", [recipient], data)


class TestNxdomainIsPerRecipient:
    async def test_one_nxdomain_does_not_fail_later_mail_unlooked(
        self, start_node: NodeFactory, dns_server: DnsServer
    ) -> None:
        """After one 550 5.1.2, each later recipient is failed by its own lookup, and once
        the domain exists, delivered: an NXDOMAIN never marks the next hop down."""
        port = _free_port_on("127.0.0.1")
        outside = await _outside(start_node, port)
        hub = await start_node(
            "hub",
            local_domains=["corp.test"],  # the DSNs stay on the hub
            queue={"retry": ["1m"], "expiry": "1h"},  # a hop marked down stays down 1 minute
            **_sender_settings(dns_server, port, "off"),
        )
        await asyncio.to_thread(_send, hub, "first@example.test", "first")
        await async_wait_until(lambda: _events(hub, "FAIL"), 15, "the first FAIL")

        later = [f"u{n}@example.test" for n in range(40)]
        await asyncio.to_thread(_send_many, hub, later, "nx")

        def all_failed() -> list[dict[str, Any]] | None:
            fails = _events(hub, "FAIL")
            return fails if len(fails) == 1 + len(later) else None

        fails = await async_wait_until(all_failed, 30, "a FAIL for every recipient")
        assert {e["reply"] for e in fails} == {"550 5.1.2 Recipient domain does not exist"}
        mx_queries = [q for q in dns_server.queries if (q.name, q.qtype) == ("example.test.", "MX")]
        assert len(mx_queries) >= 41, "every failure came from a lookup of its own"

        ip = outside.relay_addresses[0].host
        dns_server.load(
            f"example.test. 60 IN MX 10 mx1.example.test.\nmx1.example.test. 60 IN A {ip}\n"
        )
        await asyncio.to_thread(_send_many, hub, later, "ok")
        for recipient in later:
            local = recipient.partition("@")[0]
            await async_wait_until(
                lambda part=local: _inbox(outside, part), 30, f"mail for {local}"
            )
        assert not _events(hub, "DEFER")
