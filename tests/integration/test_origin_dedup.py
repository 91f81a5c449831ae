"""Copies of one origin key at the final hop: however they meet, one Maildir file each.

Copies meet at the mailstore when an upstream resubmitted a shadow while the first copy was
still on its way (the chaos test makes this happen); here the copies are put straight into
the mailstore's queue, all due in the same claim, which is where they race hardest.
"""

from __future__ import annotations

import asyncio
import smtplib
import time
from collections import Counter

import pytest

from hubd.testing import async_wait_until, maildir_messages
from hubd.tracking import read_events
from storage import NewMessage, NewRecipient
from tests.conftest import NodeFactory

pytestmark = pytest.mark.integration

DOMAIN = "corp.test"
ORIGINS = 40
COPIES = 2


def _copy(origin: int, copy: int, now: float) -> NewMessage:
    tag = f"dedup-{origin}"
    return NewMessage(
        queue_id=f"0DEDUP{origin:04d}C{copy}",
        sender="alice@client.test",
        recipients=[NewRecipient(f"bob@{DOMAIN}", f"local:{DOMAIN}")],
        body=f"Message-ID: <{tag}@client.test>\r\nSubject: {tag}\r\n\r\n{tag}\r\n".encode(),
        received_at=now,
        message_id=f"<{tag}@client.test>",
        origin=f"h1.0123456789abcdef.0ORIGIN{origin:04d}",
        client="test",
    )


def _submit(host: str, port: int) -> None:
    with smtplib.SMTP(host, port, local_hostname="client.test", timeout=30) as client:
        client.sendmail("alice@client.test", [f"bob@{DOMAIN}"], b"Subject: wake-up\r\n\r\nx\r\n")


class TestCopiesDueTogether:
    async def test_one_file_per_origin_key(self, start_node: NodeFactory) -> None:
        """Two copies of each of 40 origin keys, claimed together, give 40 files and 40 drops."""
        node = await start_node("m", local_domains=[DOMAIN])
        assert node.repository is not None
        now = time.time()
        for origin in range(ORIGINS):
            for copy in range(COPIES):
                await node.repository.enqueue(_copy(origin, copy, now))
        # Committed behind the scheduler's back: one submission over SMTP wakes it.
        address = node.relay_addresses[0]
        await asyncio.to_thread(_submit, address.host, address.port)
        repository = node.repository

        async def drained() -> bool:
            return not await repository.list_messages()

        await async_wait_until(drained, 30, "the queue to drain")
        box = node.config.mailbox_dir / DOMAIN / "bob"
        subjects = Counter(
            line
            for data in maildir_messages(box).values()
            for line in data.split(b"\r\n")
            if line.startswith(b"Subject: dedup-")
        )
        assert len(subjects) == ORIGINS
        assert set(subjects.values()) == {1}, [s for s, n in subjects.items() if n > 1][:5]
        events = Counter(e["event"] for e in read_events(node.config.node.data_dir / "tracking"))
        assert events["DELIVER"] == ORIGINS + 1  # and the wake-up message
        assert events["DUPLICATE"] == ORIGINS * (COPIES - 1)
