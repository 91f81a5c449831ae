"""Redundancy copies and take-overs in the queue: held copies, withdrawals, XQTAKEN's wait."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from storage import (
    NewMessage,
    NewRecipient,
    RecipientOutcome,
    RecipientState,
    Repository,
    ShadowRecord,
    Writer,
    open_database,
)
from storage.shadows import ShadowLedger

A_INCARNATION = "0123456789abcdef"


@dataclass
class Queue:
    repository: Repository
    ledger: ShadowLedger
    path: Path

    def count(self, sql: str) -> int:
        conn = sqlite3.connect(self.path)
        try:
            return int(conn.execute(sql).fetchone()[0])
        finally:
            conn.close()


@pytest.fixture
async def queue(tmp_path: Path) -> AsyncIterator[Queue]:
    database = await open_database(tmp_path / "queue.db")
    writer = Writer(database.write_engine)
    writer.start()
    yield Queue(
        Repository(database, writer),
        ShadowLedger(writer, database.read_engine),
        tmp_path / "queue.db",
    )
    await writer.stop()
    await database.close()


def _message(queue_id: str, **fields: object) -> NewMessage:
    defaults: dict[str, object] = {
        "queue_id": queue_id,
        "sender": "a@x.test",
        "recipients": [NewRecipient("b@y.test", "route:y.test")],
        "body": b"Subject: x\r\n\r\nx\r\n",
        "received_at": time.time() - 1,
        "message_id": None,
        "origin": f"hub-a.{A_INCARNATION}.{queue_id}",
        "client": "client",
    }
    return NewMessage(**(defaults | fields))  # type: ignore[arg-type]


HELD = ShadowRecord("127.0.0.1:2525", "hub-a", A_INCARNATION, "QA1")


class TestHeldCopies:
    async def test_a_held_copy_is_a_shadow_and_never_due(self, queue: Queue) -> None:
        """A copy marked XHOLD is committed SHADOWED under a shadow of the primary."""
        await queue.repository.enqueue(
            _message("QB1", origin=f"hub-a.{A_INCARNATION}.QA1", held_for=HELD)
        )
        (message,) = await queue.repository.list_messages("QB1")
        assert [r.state for r in message.recipients] == [RecipientState.SHADOWED]
        (shadow,) = await queue.repository.shadows()
        assert (shadow.peer_address, shadow.peer_queue_id) == ("127.0.0.1:2525", "QA1")
        assert (await queue.repository.claim_due(time.time() + 60, 10, "run")).recipients == ()

    async def test_the_primary_arriving_drops_the_copy(self, queue: Queue) -> None:
        """The same origin key arriving as a primary from an upstream deletes the held copy."""
        origin = f"hub-a.{A_INCARNATION}.QA1"
        await queue.repository.enqueue(_message("QB1", origin=origin, held_for=HELD))
        await queue.repository.enqueue(_message("QB2", origin=f"hub-a.{A_INCARNATION}.QA9"))
        await queue.repository.enqueue(
            _message("QB3", origin=origin, upstream="hub-a", upstream_incarnation=A_INCARNATION)
        )
        assert [m.queue_id for m in await queue.repository.list_messages()] == ["QB2", "QB3"]
        assert queue.count("SELECT count(*) FROM shadows") == 0

    async def test_a_message_not_before_is_not_due_until_released(self, queue: Queue) -> None:
        """Committed not due while its copy is made; released, it is due at once."""
        now = time.time()
        await queue.repository.enqueue(_message("QA1", not_before=now + 10))
        assert (await queue.repository.claim_due(now, 10, "run")).recipients == ()
        await queue.ledger.release_copied("QA1", now)
        assert len((await queue.repository.claim_due(now, 10, "run")).recipients) == 1


class TestWithdraw:
    async def test_withdrawn_message_owes_its_peer_a_notice(self, queue: Queue) -> None:
        """A require refusal deletes the message, and the peer tried is owed a notice."""
        now = time.time()
        await queue.repository.enqueue(_message("QA1", not_before=now + 10))
        assert await queue.ledger.owe_copy("QA1", "hub-b", "fedcba9876543210", now)
        assert await queue.ledger.withdraw("QA1", now)
        assert await queue.repository.list_messages() == []
        ids, _ = await queue.ledger.discard_notices("hub-b", "fedcba9876543210", None, 10, now)
        assert ids == ["QA1"]


class TestTakenWaits:
    async def test_taken_is_told_only_once_our_copy_has_left(self, queue: Queue) -> None:
        """After a take-over, XQTAKEN lists the peer's id only when the resubmitted copy left."""
        now = time.time()
        await queue.repository.enqueue(_message("QA1"))
        (claimed,) = (await queue.repository.claim_due(now, 10, "run")).recipients
        shadow = ShadowRecord("127.0.0.2:25", "hub-c", "1111111111111111", "QC1")
        handed = RecipientOutcome(
            claimed, RecipientState.SHADOWED, "127.0.0.2:25", "250 queued", shadow=shadow
        )
        await queue.repository.record_outcomes([handed])
        await queue.ledger.resubmit("127.0.0.2:25", None, now, remember_taken=True)
        assert await queue.ledger.taken_ids("127.0.0.2:25", "1111111111111111") == []
        (again,) = (await queue.repository.claim_due(now + 1, 10, "run")).recipients
        done = RecipientOutcome(again, RecipientState.DELIVERED, "route:y.test", "250 ok")
        await queue.repository.record_outcomes([done])
        assert await queue.ledger.taken_ids("127.0.0.2:25", "1111111111111111") == ["QC1"]
