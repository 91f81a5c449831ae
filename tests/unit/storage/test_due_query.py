"""The scheduler's due-work query uses its index, whatever the queue holds."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy.dialects import sqlite

from storage import NewMessage, NewRecipient, Repository, Writer, open_database
from storage.repository import due_query


@pytest.fixture
async def repository(tmp_path: Path):  # type: ignore[no-untyped-def]
    database = await open_database(tmp_path / "queue.db")
    writer = Writer(database.write_engine)
    writer.start()
    yield Repository(database, writer)
    await writer.stop()
    await database.close()


class TestDueQuery:
    async def test_plan_searches_the_index(self, repository: Repository, tmp_path: Path) -> None:
        """EXPLAIN QUERY PLAN shows an index search on ix_recipients_due and no full SCAN."""
        now = time.time()
        for i in range(200):
            await repository.enqueue(
                NewMessage(
                    f"Q{i}",
                    "a@x.test",
                    [NewRecipient(f"b{i}@y.test", "mx:y.test")],
                    b"Subject: x\r\n\r\nx\r\n",
                    now + i,
                    None,
                    f"o{i}",
                    "c",
                )
            )
        query = due_query(now + 100, 50).compile(
            dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}
        )
        conn = sqlite3.connect(tmp_path / "queue.db")
        conn.execute("ANALYZE")
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {query}")]
        conn.close()
        assert any("USING INDEX ix_recipients_due" in step for step in plan), plan
        assert not any(step.startswith("SCAN") for step in plan), plan

    async def test_claims_only_due_and_unleased(self, repository: Repository) -> None:
        """Claiming takes due recipients in due order and never the same one twice."""
        now = time.time()
        for i, offset in enumerate([30.0, -10.0, -20.0]):
            await repository.enqueue(
                NewMessage(
                    f"Q{i}",
                    "a@x.test",
                    [NewRecipient(f"r{i}@y.test", "mx:y.test")],
                    b"x\r\n",
                    now + offset,
                    None,
                    f"o{i}",
                    "c",
                )
            )
        first = await repository.claim_due(now, 10, "run-1")
        assert [c.queue_id for c in first] == ["Q2", "Q1"]
        assert await repository.claim_due(now, 10, "run-2") == []
        assert await repository.claim_due(now + 60, 10, "run-2") != []
