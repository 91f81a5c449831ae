"""WAL checkpoints in the background, so no commit pays for one and the WAL stays small.

Owns: copying committed WAL frames into the database file every second (PASSIVE: never
waits for, or blocks, a writer or reader), on its own connection and thread. Writers turn
SQLite's own automatic checkpoints off (storage/database.py), and `journal_size_limit`
truncates the WAL file after each restart of it.
Public: Checkpointer, WAL_LIMIT.
Failures: a failed checkpoint is logged and tried again at the next tick.
See also: storage/database.py (the pragmas), hubd/node.py and hubd/supervisor.py (who runs it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from pathlib import Path

log = logging.getLogger(__name__)

WAL_LIMIT = 64 << 20  # bytes the WAL file is truncated to after a checkpoint restarts it
INTERVAL = 1.0


class Checkpointer:
    """Checkpoints one queue file's WAL every INTERVAL seconds until stopped."""

    def __init__(self, path: Path, interval: float = INTERVAL) -> None:
        self._path = path
        self._interval = interval
        self._stop = asyncio.Event()

    def _checkpoint(self) -> None:
        with contextlib.closing(sqlite3.connect(self._path, timeout=10)) as conn:
            conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    async def run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._stop.wait()
            try:
                await asyncio.to_thread(self._checkpoint)
            except sqlite3.Error as error:
                log.warning("WAL checkpoint of %s failed: %s", self._path, error)

    def stop(self) -> None:
        self._stop.set()
