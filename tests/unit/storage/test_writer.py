"""Group commit: many callers share a transaction, and one caller's failure stays its own."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

from storage import NewMessage, NewRecipient, Repository


def _message(queue_id: str) -> NewMessage:
    return NewMessage(
        queue_id,
        "a@x.test",
        [NewRecipient("b@y.test", "route:y.test")],
        b"Subject: x\r\n\r\nx\r\n",
        time.time(),
        None,
        f"n.i.{queue_id}",
        "client",
    )


class TestGroupCommit:
    async def test_one_failing_intake_fails_alone(self, repository: Repository) -> None:
        """A duplicate queue id in a batch of intakes fails; the others are committed."""
        await repository.enqueue(_message("Q0"))
        results = await asyncio.gather(
            *(repository.enqueue(_message(f"Q{n}")) for n in range(1, 6)),
            repository.enqueue(_message("Q0")),
            *(repository.enqueue(_message(f"Q{n}")) for n in range(6, 9)),
            return_exceptions=True,
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        assert len(failed) == 1
        assert isinstance(failed[0].__cause__ or failed[0], sqlite3.IntegrityError)
        assert sorted(m.queue_id for m in await repository.list_messages()) == [
            f"Q{n}" for n in range(9)
        ]

    async def test_intakes_share_commits(self, repository: Repository) -> None:
        """Intakes submitted together are counted in fewer commits than operations."""
        await asyncio.gather(*(repository.enqueue(_message(f"Q{n}")) for n in range(50)))
        stats = await repository.stats()
        assert stats["ops:enqueue"] == 50
        assert stats["commits:enqueue"] < 50

    async def test_a_failure_leaves_no_half_written_work(self, repository: Repository) -> None:
        """The failing intake's rows are not in the queue, not even its body or recipients."""
        await repository.enqueue(_message("Q0"))
        with pytest.raises(sqlite3.IntegrityError):
            await repository.enqueue(_message("Q0"))
        (message,) = await repository.list_messages()
        assert len(message.recipients) == 1
