"""Two nodes, A routing a domain to B, which delivers into Maildir."""

from __future__ import annotations

import asyncio
import smtplib
from email.message import EmailMessage

import pytest

from hubd.testing import async_wait_until, maildir_messages
from tests.conftest import NodeFactory

pytestmark = pytest.mark.integration


def _message(tag: str) -> bytes:
    message = EmailMessage()
    message["From"] = "alice@outside.test"
    message["To"] = "bob@corp.test"
    message["Subject"] = tag
    message["Message-ID"] = f"<{tag}@outside.test>"
    message.set_content(f"body of {tag}\n")
    return message.as_bytes().replace(b"\n", b"\r\n")


def _send(host: str, port: int, tag: str) -> tuple[int, bytes]:
    with smtplib.SMTP(host, port, local_hostname="client.test", timeout=10) as client:
        client.ehlo()
        client.mail("alice@outside.test")
        client.rcpt("bob@corp.test")
        return client.data(_message(tag))


class TestRelayAToB:
    async def test_delivered_end_to_end(self, start_node: NodeFactory) -> None:
        """A message sent to A for B's domain lands in B's Maildir with both trace headers."""
        b = await start_node("b", local_domains=["corp.test"])
        b_addr = b.relay_addresses[0]
        a = await start_node("a", routes=[{"domains": ["corp.test"], "next_hops": [str(b_addr)]}])
        a_addr = a.relay_addresses[0]

        code, reply = await asyncio.to_thread(_send, a_addr.host, a_addr.port, "m1")
        assert code == 250
        assert reply.endswith(b" queued")

        mailbox = b.config.mailbox_dir / "corp.test" / "bob"
        files = await async_wait_until(lambda: maildir_messages(mailbox), 15, "delivery on B")
        (data,) = files.values()
        assert data.count(b"Received: from") == 2
        assert b"by a.hubd.test (hubd)" in data
        assert b"by b.hubd.test (hubd)" in data
        assert data.endswith(b"body of m1\r\n")

    async def test_next_hop_down_then_back(self, start_node: NodeFactory) -> None:
        """With B stopped, A keeps the mail; once B starts again, A delivers it."""
        b = await start_node("b", local_domains=["corp.test"])
        b_addr = b.relay_addresses[0]
        a = await start_node("a", routes=[{"domains": ["corp.test"], "next_hops": [str(b_addr)]}])
        a_addr = a.relay_addresses[0]
        await b.stop()

        code, _ = await asyncio.to_thread(_send, a_addr.host, a_addr.port, "held")
        assert code == 250
        assert a.repository is not None

        async def deferred() -> bool:
            queued = await a.repository.list_messages()  # type: ignore[union-attr]
            return bool(queued) and queued[0].recipients[0].attempts >= 1

        await async_wait_until(deferred, 15, "a failed attempt on A")
        (held,) = await a.repository.list_messages()
        assert held.recipients[0].last_error.startswith("451 4.4.1")

        b2 = await start_node("b", address=(b_addr.host, b_addr.port), local_domains=["corp.test"])
        mailbox = b2.config.mailbox_dir / "corp.test" / "bob"
        await async_wait_until(lambda: maildir_messages(mailbox), 15, "delivery after restart")
        assert len(maildir_messages(mailbox)) == 1

        async def a_empty() -> bool:
            return not await a.repository.list_messages()  # type: ignore[union-attr]

        await async_wait_until(a_empty, 10, "A to forget the delivered message")
