"""STARTTLS on relay listeners when [tls] is set: real handshakes, trustme certificates."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hubd.config import HostPort
from hubd.errors import ConfigError
from hubd.node import Node
from hubd.testing import free_loopback_address
from hubd.testing.helpers import maildir_messages, wait_until
from tests.conftest import NodeFactory
from tests.integration.rawsmtp import RawClient
from tests.pki import Pki

pytestmark = pytest.mark.integration


async def tls_node(start_node: NodeFactory, pki: Pki, **overrides: object) -> Node:
    host = free_loopback_address()[0]
    return await start_node(
        address=(host, 0),
        local_domains=["corp.test"],
        tls=pki.tls_settings(host),
        **overrides,
    )


@contextlib.asynccontextmanager
async def connected(node: Node) -> AsyncIterator[RawClient]:
    client = await RawClient.connect(node.relay_addresses[0])
    try:
        yield client
    finally:
        await client.close()


async def upgrade(client: RawClient, node: Node, pki: Pki) -> None:
    reply = await client.command("STARTTLS")
    assert reply.line == "220 2.0.0 Ready to start TLS", reply
    await client.starttls(pki.client_context(), node.relay_addresses[0].host)


async def test_starttls_offered_and_mail_received_under_tls(
    start_node: NodeFactory, pki: Pki
) -> None:
    """With [tls], EHLO offers STARTTLS; after the handshake it is not offered again and a
    message sent under TLS is delivered with ESMTPS and its TLS version in Received:."""
    node = await tls_node(start_node, pki)
    async with connected(node) as client:
        assert "250-STARTTLS" in (await client.command("EHLO c.test")).lines
        await upgrade(client, node, pki)
        ehlo = await client.command("EHLO c.test")
        assert ehlo.code == 250
        assert not any("STARTTLS" in line for line in ehlo.lines), ehlo
        assert (await client.command("STARTTLS")).line.startswith("503 5.5.1 ")
        for line in ("MAIL FROM:<a@outside.test>", "RCPT TO:<bob@corp.test>"):
            assert (await client.command(line)).code == 250, line
        assert (await client.command("DATA")).code == 354
        await client.send(b"Subject: tls\r\n\r\nbody\r\n.\r\n")
        assert (await client.response()).line.startswith("250 2.0.0 ")
    mailboxes = node.config.mailbox_dir
    await asyncio.to_thread(wait_until, lambda: maildir_messages(mailboxes), 10, "delivery")
    (stored,) = maildir_messages(mailboxes).values()
    header = stored.split(b"\r\n\r\n", 1)[0]
    assert b"with ESMTPS id" in header, header
    assert b"(using TLSv1." in header, header


async def test_plain_text_pipelined_after_starttls_is_dropped(
    start_node: NodeFactory, pki: Pki
) -> None:
    """Commands sent in the clear behind STARTTLS (CVE-2011-0411) are never executed."""
    node = await tls_node(start_node, pki)
    async with connected(node) as client:
        await client.command("EHLO c.test")
        await client.send(b"STARTTLS\r\nMAIL FROM:<injected@outside.test>\r\n")
        assert (await client.response()).line == "220 2.0.0 Ready to start TLS"
        await client.starttls(pki.client_context(), node.relay_addresses[0].host)
        # Had the MAIL counted, this would be 503 (nested) or 530: it must be a fresh start.
        reply = await client.command("MAIL FROM:<a@outside.test>")
        assert reply.line.startswith("503 5.5.1 Send EHLO"), reply
        assert (await client.command("EHLO c.test")).code == 250
        assert (await client.command("MAIL FROM:<a@outside.test>")).code == 250


async def test_handshake_cut_short_leaves_the_node_serving(
    start_node: NodeFactory, pki: Pki
) -> None:
    """A client that answers 220 with garbage or hangs up mid-handshake harms no one else."""
    node = await tls_node(start_node, pki)
    async with connected(node) as client:
        await client.command("EHLO c.test")
        assert (await client.command("STARTTLS")).code == 220
        await client.send(b"this is no TLS record\r\n" * 4)
        assert await client.expect_closed() == b""
    async with connected(node) as client:
        await client.command("EHLO c.test")
        assert (await client.command("STARTTLS")).code == 220
    async with connected(node) as client:
        await client.command("EHLO c.test")
        await upgrade(client, node, pki)
        assert (await client.command("EHLO c.test")).code == 250


async def test_no_tls_section_no_starttls(start_node: NodeFactory) -> None:
    """Without [tls], STARTTLS is neither offered nor accepted (502 5.5.1)."""
    node = await start_node()
    async with connected(node) as client:
        ehlo = await client.command("EHLO c.test")
        assert not any("STARTTLS" in line for line in ehlo.lines)
        assert (await client.command("STARTTLS")).line.startswith("502 5.5.1 ")


async def test_renewed_certificate_used_without_restart(start_node: NodeFactory, pki: Pki) -> None:
    """Certificate files replaced on disk are used from the next handshake on."""
    node = await tls_node(start_node, pki)
    host = node.relay_addresses[0].host

    async def presented() -> bytes:
        async with connected(node) as client:
            await client.command("EHLO c.test")
            await upgrade(client, node, pki)
            ssl_object = client.writer.get_extra_info("ssl_object")
            assert isinstance(ssl_object, ssl.SSLObject)
            der = ssl_object.getpeercert(binary_form=True)
            assert der is not None
            return der

    first = await presented()
    cert, key = pki.issue(host, name="renewed")
    tls = node.config.tls
    assert tls is not None
    os.replace(cert, tls.cert)
    os.replace(key, tls.key)
    assert await presented() != first


async def test_unreadable_certificate_is_a_config_error(
    start_node: NodeFactory, tmp_path: Path
) -> None:
    """A [tls] naming files that are not a certificate and key stops the start, naming tls.cert."""
    (tmp_path / "cert.pem").write_text("not a certificate")
    with pytest.raises(ConfigError) as raised:
        await start_node(tls={"cert": str(tmp_path / "cert.pem"), "key": str(tmp_path / "k")})
    assert raised.value.source == "tls.cert"


def client_hello(pki: Pki, host: str) -> bytes:
    """The first flight of a real TLS client: the bytes a handshake starts with."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = pki.client_context().wrap_bio(incoming, outgoing, server_hostname=host)
    with contextlib.suppress(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


async def test_tls_handshakes_cut_short_at_every_step(
    start_node: NodeFactory, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """Clients that send part of a ClientHello (or garbage) and then hang up, reset or stall,
    after STARTTLS on relay and submission ports and on an implicit-TLS port: each is cut off
    within the timeouts, the node logs no error and still serves a real TLS client."""
    node = await tls_node(start_node, pki, smtp={"idle_timeout": "1s"})
    host = node.relay_addresses[0].host
    submission = await start_node(
        "sub",
        address=(host, 0),
        local_domains=["corp.test"],
        tls=pki.tls_settings(host),
        smtp={"idle_timeout": "1s"},
        submission={"listen": [f"{host}:0"], "tls_listen": [f"{host}:0"], "idle_timeout": "1s"},
    )
    hello = client_hello(pki, host)
    cuts = sorted({0, 1, 5, len(hello) // 2, len(hello) - 1, len(hello)})
    ports = [
        ("starttls", node.relay_addresses[0]),
        ("starttls", submission.submission_addresses[0]),
        ("implicit", submission.submission_tls_addresses[0]),
    ]

    async def cut_short(kind: str, address: HostPort, cut: int, ending: str) -> None:
        reader, writer = await asyncio.open_connection(address.host, address.port)
        try:
            if kind == "starttls":
                assert (await reader.readline()).startswith(b"220 ")
                writer.write(b"EHLO c.test\r\nSTARTTLS\r\n")
                while not (line := await reader.readline()).startswith(b"220 "):
                    assert line.startswith(b"250"), line
            writer.write(hello[:cut] if cut else b"\x16\x03\x01garbage")
            await writer.drain()
            if ending == "reset":
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            if ending == "stall":
                async with asyncio.timeout(10):  # the server gives up: 1 s idle, then closed
                    while await reader.read(4096):
                        pass
        except ConnectionError:
            pass  # the server reset a connection it had given up on: fine
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    started = time.monotonic()
    cases = itertools.product(ports, cuts, ("close", "reset", "stall"))
    await asyncio.gather(*(cut_short(k, a, c, e) for (k, a), c, e in cases))
    assert time.monotonic() - started < 15
    for target in (node, submission):
        inbound = target._inbound
        assert inbound is not None
        await asyncio.to_thread(wait_until, lambda i=inbound: not i.live, 10, "no session left")
    async with connected(node) as client:
        await client.command("EHLO c.test")
        await upgrade(client, node, pki)
        assert (await client.command("EHLO c.test")).code == 250
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], errors
