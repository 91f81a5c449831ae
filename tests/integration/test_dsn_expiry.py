"""Failure and delay notices, expiry, and a retry schedule that survives a restart."""

from __future__ import annotations

import asyncio
import email
import smtplib
from email import policy
from email.message import EmailMessage
from typing import Any

import pytest

from hubd.node import Node
from hubd.testing import async_wait_until, free_loopback_address, maildir_messages
from hubd.tracking import read_events
from tests.conftest import NodeFactory

pytestmark = pytest.mark.integration


def _send(node: Node, sender: str, recipients: list[str], tag: str) -> dict[str, Any]:
    address = node.relay_addresses[0]
    data = (
        f"From: {sender or 'daemon@a.test'}\r\nTo: {', '.join(recipients)}\r\n"
        f"Subject: {tag}\r\nMessage-ID: <{tag}@a.test>\r\n\r\nbody {tag}\r\n"
    ).encode()
    with smtplib.SMTP(address.host, address.port, local_hostname="client.test", timeout=10) as c:
        return c.sendmail(sender, recipients, data)


def _events(node: Node, event: str) -> list[dict[str, Any]]:
    return [e for e in read_events(node.config.node.data_dir / "tracking") if e["event"] == event]


def _reports(node: Node, local: str = "alice") -> list[EmailMessage]:
    box = node.config.mailbox_dir / "a.test" / local
    return [
        email.message_from_bytes(data, policy=policy.default)  # type: ignore[misc]
        for data in maildir_messages(box).values()
    ]


def _status_blocks(report: EmailMessage) -> list[Any]:
    (status,) = [p for p in report.walk() if p.get_content_type() == "message/delivery-status"]
    return status.get_payload()  # type: ignore[no-any-return]


class TestFailureNotice:
    async def test_one_recipient_refused_one_delivered(self, start_node: NodeFactory) -> None:
        """A 5xx for one recipient and a 250 for the other: one delivery, one DSN with the reply."""
        b = await start_node(
            "b",
            local_domains=["corp.test"],
            mailboxes={"catch_all": False, "recipients": ["good@corp.test"]},
        )
        a = await start_node(
            "a",
            local_domains=["a.test"],
            routes=[{"domains": ["corp.test"], "next_hops": [str(b.relay_addresses[0])]}],
        )
        refused = await asyncio.to_thread(
            _send, a, "alice@a.test", ["good@corp.test", "bad@corp.test"], "mixed"
        )
        assert refused == {}  # A accepted both; B decides

        (report,) = await async_wait_until(lambda: _reports(a), 15, "the DSN in alice's box")
        good = maildir_messages(b.config.mailbox_dir / "corp.test" / "good")
        assert len(good) == 1
        assert report.get_content_type() == "multipart/report"
        assert report.get_param("report-type") == "delivery-status"
        assert report["Subject"] == "Undelivered Mail Returned to Sender"
        per_message, *per_recipient = _status_blocks(report)
        assert per_message["Reporting-MTA"] == "dns; a.hubd.test"
        (bad,) = per_recipient
        assert bad["Final-Recipient"] == "rfc822; bad@corp.test"
        assert bad["Action"] == "failed"
        assert bad["Status"] == "5.1.1"
        assert bad["Diagnostic-Code"].startswith("smtp; 550 5.1.1")
        assert bad["Remote-MTA"] == f"dns; {b.relay_addresses[0].host}"
        returned = [p for p in report.walk() if p.get_content_type() == "message/rfc822"]
        assert returned, "the original message is returned"
        (dsn,) = _events(a, "DSN")
        assert dsn["recipients"] == ["bad@corp.test"]

    async def test_no_notice_for_null_sender(self, start_node: NodeFactory) -> None:
        """A null-sender failure gets no bounce, only a double bounce to a.test's postmaster."""
        b = await start_node(
            "b", local_domains=["corp.test"], mailboxes={"catch_all": False, "recipients": []}
        )
        a = await start_node(
            "a",
            local_domains=["a.test"],
            routes=[{"domains": ["corp.test"], "next_hops": [str(b.relay_addresses[0])]}],
        )
        await asyncio.to_thread(_send, a, "", ["nobody@corp.test"], "nullsender")
        await async_wait_until(lambda: _events(a, "FAIL"), 15, "the FAIL")
        (dsn,) = await async_wait_until(lambda: _events(a, "DSN"), 15, "the double bounce")
        assert dsn["reply"] == "double-bounce"
        await async_wait_until(lambda: _reports(a, "postmaster"), 15, "the postmaster copy")
        assert not _events(a, "DOUBLE_BOUNCE")


class TestExpiry:
    async def test_delay_warning_then_failure_then_gone(self, start_node: NodeFactory) -> None:
        """A next hop that never answers: a delay warning, then at expiry a failure DSN."""
        dead, _ = free_loopback_address()
        a = await start_node(
            "a",
            local_domains=["a.test"],
            routes=[{"domains": ["corp.test"], "next_hops": [f"{dead}:2525"]}],
            queue={"retry": ["1s"], "expiry": "4s", "delay_notice": "1s"},
        )
        await asyncio.to_thread(_send, a, "alice@a.test", ["bob@corp.test"], "expire")
        reports = await async_wait_until(
            lambda: len(_reports(a)) >= 2 and _reports(a), 30, "delay and failure DSNs"
        )
        subjects = sorted(str(r["Subject"]) for r in reports)
        assert subjects == [
            "Delayed Mail (still being retried)",
            "Undelivered Mail Returned to Sender",
        ]
        for report in reports:
            (_, block) = _status_blocks(report)
            expected = "delayed" if "Delayed" in str(report["Subject"]) else "failed"
            assert block["Action"] == expected
            assert block["Status"] == "4.4.1"
        delayed = next(r for r in reports if "Delayed" in str(r["Subject"]))
        assert "Will-Retry-Until" in _status_blocks(delayed)[1]

        async def only_dsns_left() -> bool:
            queued = await a.repository.list_messages()  # type: ignore[union-attr]
            return all(m.sender == "" for m in queued)

        await async_wait_until(only_dsns_left, 15, "the expired message to be gone")
        fails = [e for e in _events(a, "FAIL") if e["recipients"] == ["bob@corp.test"]]
        assert len(fails) == 1
        assert "expired" in fails[0]["reply"]

    async def test_null_sender_expires_silently(self, start_node: NodeFactory) -> None:
        """A null-sender message expires with no DSN but the postmaster's double bounce."""
        dead, _ = free_loopback_address()
        a = await start_node(
            "a",
            local_domains=["a.test"],
            routes=[{"domains": ["corp.test"], "next_hops": [f"{dead}:2525"]}],
            queue={"retry": ["1s"], "expiry": "3s", "delay_notice": "1s"},
        )
        await asyncio.to_thread(_send, a, "", ["bob@corp.test"], "expire-null")
        await async_wait_until(lambda: _events(a, "FAIL"), 30, "expiry")

        async def empty() -> bool:
            return not await a.repository.list_messages()  # type: ignore[union-attr]

        await async_wait_until(empty, 10, "the queue to empty")
        assert [e["reply"] for e in _events(a, "DSN")] == ["double-bounce"]
        (copy,) = _reports(a, "postmaster")
        assert "double bounce" in str(copy["Subject"])


class TestScheduleSurvivesRestart:
    async def test_next_attempt_time_is_kept(self, start_node: NodeFactory) -> None:
        """A restart keeps the next attempt time and the attempt count from the database."""
        dead, _ = free_loopback_address()
        settings: dict[str, Any] = {
            "local_domains": ["a.test"],
            "routes": [{"domains": ["corp.test"], "next_hops": [f"{dead}:2525"]}],
            "queue": {"retry": ["1h"], "expiry": "2d"},
        }
        a = await start_node("a", **settings)
        await asyncio.to_thread(_send, a, "alice@a.test", ["bob@corp.test"], "sched")

        async def deferred() -> Any:
            queued = await a.repository.list_messages()  # type: ignore[union-attr]
            return queued and queued[0].recipients[0].attempts == 1 and queued[0]

        before = await async_wait_until(deferred, 15, "one failed attempt")
        address = a.relay_addresses[0]
        await a.stop()
        a2 = await start_node("a", address=(address.host, address.port), **settings)
        # The restarted scheduler is running once it has delivered a fresh local message.
        await asyncio.to_thread(_send, a2, "x@a.test", ["alice@a.test"], "probe")
        box = a2.config.mailbox_dir / "a.test" / "alice"
        await async_wait_until(lambda: maildir_messages(box), 15, "the probe delivery")
        (after,) = [m for m in await a2.repository.list_messages() if m.queue_id == before.queue_id]  # type: ignore[union-attr]
        assert after.recipients[0].attempts == 1
        assert after.recipients[0].next_attempt_at == before.recipients[0].next_attempt_at
        assert after.recipients[0].next_attempt_at - before.received_at > 3000


def _send_raw(node: Node, commands: list[str], data: bytes) -> list[tuple[int, bytes]]:
    """Send one transaction with explicit MAIL and RCPT arguments; return every reply."""
    address = node.relay_addresses[0]
    with smtplib.SMTP(address.host, address.port, local_hostname="client.test", timeout=10) as c:
        c.ehlo()
        replies = [c.docmd(command) for command in commands]
        replies.append(c.docmd("DATA"))
        c.send(data + b".\r\n")
        replies.append(c.getreply())
    return replies


class TestDsnExtension:
    async def test_ehlo_advertises_dsn(self, start_node: NodeFactory) -> None:
        """DSN is in the EHLO reply."""
        a = await start_node("a", local_domains=["a.test"])
        address = a.relay_addresses[0]

        def ehlo() -> bool:
            with smtplib.SMTP(address.host, address.port, timeout=10) as client:
                client.ehlo()
                return client.has_extn("dsn")

        assert await asyncio.to_thread(ehlo)

    async def test_notify_ret_envid_orcpt(self, start_node: NodeFactory) -> None:
        """NOTIFY picks who is told, RET=HDRS returns headers, ENVID and ORCPT are echoed."""
        b = await start_node(
            "b",
            local_domains=["corp.test"],
            mailboxes={"catch_all": False, "recipients": ["good@corp.test"]},
        )
        a = await start_node(
            "a",
            local_domains=["a.test"],
            routes=[{"domains": ["corp.test"], "next_hops": [str(b.relay_addresses[0])]}],
        )
        replies = await asyncio.to_thread(
            _send_raw,
            a,
            [
                "MAIL FROM:<alice@a.test> RET=HDRS ENVID=env+2B42",
                "RCPT TO:<good@corp.test> NOTIFY=SUCCESS",
                "RCPT TO:<bad@corp.test> NOTIFY=FAILURE ORCPT=rfc822;Bad+40corp.test",
                "RCPT TO:<silent@corp.test> NOTIFY=NEVER",
            ],
            b"Subject: dsn\r\nMessage-ID: <dsn@a.test>\r\n\r\nsecret body\r\n",
        )
        assert [code for code, _ in replies] == [250, 250, 250, 250, 354, 250]

        (report,) = await async_wait_until(lambda: _reports(a), 15, "one DSN")
        per_message, *blocks = _status_blocks(report)
        assert per_message["Original-Envelope-Id"] == "env+42"
        by_recipient = {str(b["Final-Recipient"]): b for b in blocks}
        assert set(by_recipient) == {"rfc822; good@corp.test", "rfc822; bad@corp.test"}
        assert by_recipient["rfc822; good@corp.test"]["Action"] == "relayed"
        assert by_recipient["rfc822; bad@corp.test"]["Action"] == "failed"
        assert by_recipient["rfc822; bad@corp.test"]["Original-Recipient"] == "rfc822;Bad@corp.test"
        kinds = [p.get_content_type() for p in report.walk()]
        assert "text/rfc822-headers" in kinds
        assert "message/rfc822" not in kinds
        assert b"secret body" not in report.as_bytes()

    async def test_malformed_notify_refused(self, start_node: NodeFactory) -> None:
        """A malformed NOTIFY gets 501 5.5.4 and the session goes on."""
        a = await start_node("a", local_domains=["a.test"])
        replies = await asyncio.to_thread(
            _send_raw,
            a,
            ["MAIL FROM:<x@a.test>", "RCPT TO:<bob@a.test> NOTIFY=MAYBE", "RCPT TO:<bob@a.test>"],
            b"Subject: x\r\n\r\nx\r\n",
        )
        assert replies[1][0] == 501
        assert replies[1][1].startswith(b"5.5.4")
        assert replies[-1][0] == 250
