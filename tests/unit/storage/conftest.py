"""A repository over a real queue file in tmp_path, with its writer running."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage import Repository, Writer, open_database


@pytest.fixture
async def repository(tmp_path: Path) -> AsyncIterator[Repository]:
    database = await open_database(tmp_path / "queue.db")
    writer = Writer(database.write_engine)
    writer.start()
    yield Repository(database, writer)
    await writer.stop()
    await database.close()
