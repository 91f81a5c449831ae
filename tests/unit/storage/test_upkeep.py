"""The queue's upkeep survives a full disk: a failed round is logged, the next one runs."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from hubd.waiting import async_wait_until
from storage import Spool, Upkeep, open_database


async def test_a_full_disk_does_not_stop_upkeep(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A spool clean-up that fails with SQLITE_FULL (as SQLAlchemy raises it) is tried again
    at the next tick instead of taking the node down."""
    database = await open_database(tmp_path / "queue.db")
    rounds = 0

    async def collect() -> list[str]:
        nonlocal rounds
        rounds += 1
        full = sqlite3.OperationalError("database or disk is full")
        raise OperationalError("DELETE FROM spool_garbage", None, full)

    upkeep = Upkeep(database.path, Spool(tmp_path / "spool"), collect, interval=0.01)
    runner = asyncio.create_task(upkeep.run())
    await async_wait_until(lambda: rounds >= 3, 5, "three rounds")
    await upkeep.stop()
    await runner
    await database.close()
    assert (
        "spool clean-up failed: (sqlite3.OperationalError) database or disk is full" in caplog.text
    )
