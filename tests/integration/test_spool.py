"""Messages past smtp.spool_threshold: spooled to a file as they arrive, never held whole.

They must arrive byte for byte, leave no spool file behind once delivered, leave nothing
when refused or cut short, and keep a node's memory bounded by configuration.
"""

from __future__ import annotations

import asyncio
import smtplib
from pathlib import Path

import pytest

from hubd.node import Node
from hubd.testing import (
    NodeProcess,
    async_wait_until,
    free_loopback_address,
    maildir_messages,
    wait_until,
    write_config,
)
from tests.conftest import NodeFactory, merge, node_settings
from tests.integration.rawsmtp import RawClient

pytestmark = pytest.mark.integration

SPOOL = {"smtp": {"spool_threshold": "64KiB"}}


def _big(tag: str, size: int) -> bytes:
    """A CRLF message of about `size` bytes, with ordinary lines and a leading-dot line."""
    head = f"Subject: {tag}\r\nMessage-ID: <{tag}@client.test>\r\n\r\n.dot line\r\n".encode()
    line = b"0123456789abcdefghijklmnopqrstuvwxyz" * 2 + b"\r\n"
    return head + line * (size // len(line))


def _files(node: Node) -> list[Path]:
    spool = node.config.node.data_dir / "spool"
    return [p for p in spool.rglob("*") if p.is_file()]


def _send(node: Node, data: bytes) -> None:
    address = node.relay_addresses[0]
    with smtplib.SMTP(address.host, address.port, local_hostname="client.test", timeout=60) as c:
        c.sendmail("alice@client.test", ["bob@corp.test"], data)


class TestSpooledMessages:
    async def test_relayed_byte_for_byte_and_cleaned_up(self, start_node: NodeFactory) -> None:
        """A 2 MB message crosses two spooling nodes intact; no spool file is left after."""
        b = await start_node("b", local_domains=["corp.test"], **SPOOL)
        route = [{"domains": ["corp.test"], "next_hops": [str(b.relay_addresses[0])]}]
        a = await start_node("a", routes=route, **SPOOL)
        data = _big("big", 2_000_000)
        await asyncio.to_thread(_send, a, data)
        boxes = b.config.mailbox_dir

        def arrived() -> bytes | None:
            found = maildir_messages(boxes)
            return next(iter(found.values()), None)

        stored = await async_wait_until(arrived, 60, "the big message at B")
        # What the client sent, after the trace headers each hop added.
        assert stored.endswith(data)
        assert stored.count(b"\r\nReceived: ") + stored.startswith(b"Received: ") >= 2
        await async_wait_until(lambda: not _files(a) and not _files(b), 15, "no spool files")
        assert await a.repository.list_messages() == []

    async def test_refused_after_spooling_leaves_nothing(self, start_node: NodeFactory) -> None:
        """A NUL past the threshold: 550, and neither a queued message nor a spool file."""
        node = await start_node("n", local_domains=["corp.test"], **SPOOL)
        data = _big("nul", 300_000) + b"late \x00 byte\r\n"
        with pytest.raises(smtplib.SMTPDataError) as refused:
            await asyncio.to_thread(_send, node, data)
        assert refused.value.smtp_code == 550
        assert await node.repository.list_messages() == []
        assert _files(node) == []

    async def test_client_gone_mid_data_leaves_nothing(self, start_node: NodeFactory) -> None:
        """A client that vanishes half-way through a spooled message leaves no file behind."""
        node = await start_node("n", local_domains=["corp.test"], **SPOOL)
        client = await RawClient.connect(node.relay_addresses[0])
        for line in ("EHLO c.test", "MAIL FROM:<a@client.test>", "RCPT TO:<bob@corp.test>"):
            await client.command(line)
        assert (await client.command("DATA")).code == 354
        await client.send(_big("cut", 500_000))
        await async_wait_until(lambda: _files(node), 10, "the spool file to be written")
        await client.close()
        await async_wait_until(lambda: not _files(node), 10, "the half file removed")
        assert await node.repository.list_messages() == []


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


class TestMemoryBound:
    def test_concurrent_big_messages_do_not_grow_the_node(self, tmp_path: Path) -> None:
        """Four concurrent 16 MB messages: the node's peak RSS stays near its resting size
        (held whole, each would cost it three times its size)."""
        host, port = free_loopback_address()
        settings = merge(
            node_settings(tmp_path / "n", "n", host, port), {"local_domains": ["corp.test"]}
        )
        node = NodeProcess(
            write_config(tmp_path / "n.toml", settings), (host, port), tmp_path / "log"
        )
        node.start()
        try:
            assert node.process is not None
            resting = _peak_rss_mb(node.process.pid)
            data = _big("m", 16 << 20)

            def send(n: int) -> None:
                with smtplib.SMTP(host, port, local_hostname="client.test", timeout=120) as c:
                    c.sendmail("alice@client.test", [f"u{n}@corp.test"], data)

            async def all_of_them() -> None:
                await asyncio.gather(*(asyncio.to_thread(send, n) for n in range(4)))

            asyncio.run(all_of_them())
            boxes = tmp_path / "n" / "mailboxes"
            wait_until(lambda: len(list(boxes.glob("*/*/new/*"))) == 4, 120, "four delivered")
            peak = _peak_rss_mb(node.process.pid)
        finally:
            node.kill()
        print(f"\nresting {resting:.0f} MB, peak {peak:.0f} MB over 4 x 16 MB")
        assert peak - resting < 48, (resting, peak)
