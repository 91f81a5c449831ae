"""A DSN that cannot be delivered goes to queue.double_bounce_to, or is dropped out loud.

The DNS server on loopback knows no domain, so the message to x@gone.test fails with
550 5.1.2 and its DSN to the sender (also at gone.test) fails the same way. That double
bounce goes to postmaster@<first local domain> by default; with nowhere to go (no local
domain), or when it fails itself, it is dropped with a DOUBLE_BOUNCE line and a warning.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import smtplib
from typing import Any

import pytest

from hubd.dns_server import DnsServer
from hubd.node import Node
from hubd.testing import async_wait_until, maildir_messages
from hubd.tracking import read_events
from tests.conftest import NodeFactory

pytestmark = pytest.mark.integration

SENDER = "someone@gone.test"
NXDOMAIN = "550 5.1.2 Recipient domain does not exist"


def _send(node: Node) -> None:
    address = node.relay_addresses[0]
    data = (
        b"From: someone@gone.test\r\nSubject: doomed\r\nMessage-ID: <doomed@gone.test>\r\n\r\nx\r\n"
    )
    with smtplib.SMTP(address.host, address.port, local_hostname="client.test", timeout=10) as c:
        c.sendmail(SENDER, ["x@gone.test"], data)


def _events(node: Node, event: str) -> list[dict[str, Any]]:
    return [e for e in read_events(node.config.node.data_dir / "tracking") if e["event"] == event]


async def _hub(start_node: NodeFactory, dns_server: DnsServer, **settings: Any) -> Node:
    return await start_node(
        "hub", dns={"nameservers": [dns_server.address], "timeout": "2s"}, **settings
    )


class TestDoubleBounce:
    async def test_goes_to_the_postmaster_of_the_first_local_domain(
        self, start_node: NodeFactory, dns_server: DnsServer
    ) -> None:
        """The undeliverable DSN reaches postmaster@corp.test's Maildir, the DSN attached."""
        hub = await _hub(start_node, dns_server, local_domains=["corp.test", "other.test"])
        await asyncio.to_thread(_send, hub)
        inbox = hub.config.mailbox_dir / "corp.test" / "postmaster"
        (data,) = (await async_wait_until(lambda: maildir_messages(inbox), 20, "the copy")).values()
        notice = email.message_from_bytes(data, policy=email.policy.SMTP)
        assert notice["Subject"] == "Postmaster Copy: Undelivered Mail (double bounce)"
        assert notice["To"].addresses[0].addr_spec == "postmaster@corp.test"
        assert f"<{SENDER}>: failed: {NXDOMAIN}" in data.decode()
        assert b"Undelivered Mail Returned to Sender" in data  # the failed DSN, returned
        fails = _events(hub, "FAIL")
        assert [e["recipients"] for e in fails] == [["x@gone.test"], [SENDER]]
        assert [e["reply"] for e in _events(hub, "DSN")] == ["failure", "double-bounce"]
        assert not _events(hub, "DOUBLE_BOUNCE")

    async def test_nowhere_to_go_is_dropped_with_a_line_and_a_warning(
        self, start_node: NodeFactory, dns_server: DnsServer, caplog: pytest.LogCaptureFixture
    ) -> None:
        """No local domain (a hub): the failed DSN is dropped, tracked and warned about."""
        caplog.set_level(logging.WARNING, logger="hubd.delivery.notices")
        hub = await _hub(start_node, dns_server)
        assert hub.config.double_bounce_address == ""
        await asyncio.to_thread(_send, hub)
        (dropped,) = await async_wait_until(
            lambda: _events(hub, "DOUBLE_BOUNCE"), 20, "a DOUBLE_BOUNCE line"
        )
        assert dropped["recipients"] == [SENDER]
        assert dropped["sender"] == ""
        assert dropped["reply"] == NXDOMAIN
        assert dropped["dropped"] == "queue.double_bounce_to is empty"
        assert any(
            "double bounce dropped" in r.getMessage() and SENDER in r.getMessage()
            for r in caplog.records
        )

    async def test_a_failed_double_bounce_is_dropped(
        self, start_node: NodeFactory, dns_server: DnsServer
    ) -> None:
        """double_bounce_to in a domain that does not exist: tried once, then dropped."""
        hub = await _hub(start_node, dns_server, queue={"double_bounce_to": "pm@gone.test"})
        await asyncio.to_thread(_send, hub)
        (dropped,) = await async_wait_until(
            lambda: _events(hub, "DOUBLE_BOUNCE"), 20, "a DOUBLE_BOUNCE line"
        )
        assert dropped["recipients"] == ["pm@gone.test"]
        assert dropped["dropped"] == "it was the double bounce itself"
        fails = await async_wait_until(
            lambda: len(_events(hub, "FAIL")) == 3 and _events(hub, "FAIL"), 20, "three FAILs"
        )
        assert [e["recipients"] for e in fails] == [
            ["x@gone.test"],
            [SENDER],
            ["pm@gone.test"],
        ]
