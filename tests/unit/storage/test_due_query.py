"""The scheduler's due-work query uses its index, whatever the queue holds."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from storage import NewMessage, NewRecipient, Repository
from storage.claim import DUE_SQL, LEASE_SQL


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
        conn = sqlite3.connect(tmp_path / "queue.db")
        conn.execute("ANALYZE")
        for query, args in [
            (DUE_SQL, (0, now + 100, 50)),
            (LEASE_SQL, ("run-1", 0, now + 100, 50)),
        ]:
            plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {query}", args)]
            assert any("USING INDEX ix_recipients_due" in step for step in plan), plan
            assert not any(step.startswith("SCAN") for step in plan), plan
        conn.close()

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
        assert [c.queue_id for c in first.recipients] == ["Q2", "Q1"]
        assert first.next_due == now + 30.0
        assert {first.bodies[c.message].head for c in first.recipients} == {b"x\r\n"}
        assert (await repository.claim_due(now, 10, "run-2")).recipients == ()
        assert (await repository.claim_due(now + 60, 10, "run-2")).recipients != ()
