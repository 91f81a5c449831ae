"""Background upkeep of a queue file: WAL checkpoints and the spool files of deleted bodies.

Owns: once a second, copying committed WAL frames into the database file (PASSIVE: never
waits for, or blocks, a writer or reader; writers have SQLite's own automatic checkpoints
off, so no commit pays for one, and `journal_size_limit` truncates the WAL after each
restart of it), and unlinking the spool files whose bodies are gone (collected in the same
transactions that deleted them, unlinked only after those committed).
Public: Upkeep, WAL_LIMIT.
Failures: a failed round is logged and tried again at the next tick.
Limits: one per queue file, in the process that owns its lifecycle.
See also: storage/database.py (the pragmas), storage/spool.py, hubd/node.py and
hubd/supervisor.py (who runs it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

from sqlalchemy.exc import DBAPIError

from storage.spool import Spool

log = logging.getLogger(__name__)

WAL_LIMIT = 64 << 20  # bytes the WAL file is truncated to after a checkpoint restarts it
INTERVAL = 1.0


class Upkeep:
    """Runs the upkeep of one queue file every INTERVAL seconds until stopped."""

    def __init__(
        self,
        path: Path,
        spool: Spool,
        collect_garbage: Callable[[], Awaitable[list[str]]],
        interval: float = INTERVAL,
    ) -> None:
        self._path = path
        self._spool = spool
        self._collect = collect_garbage
        self._interval = interval
        self._stop = asyncio.Event()
        self._done = asyncio.Event()

    def _checkpoint(self) -> None:
        with contextlib.closing(sqlite3.connect(self._path, timeout=10)) as conn:
            conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    async def run(self) -> None:
        try:
            await self._rounds()
        finally:
            self._done.set()

    async def _rounds(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._stop.wait()
            if self._stop.is_set():
                return
            try:
                await asyncio.to_thread(self._checkpoint)
            except sqlite3.Error as error:
                log.warning("WAL checkpoint of %s failed: %s", self._path, error)
            try:
                names = await self._collect()
                if names:
                    await asyncio.to_thread(self._spool.unlink, names)
            except (sqlite3.Error, DBAPIError, OSError) as error:  # a full disk, say
                log.warning("spool clean-up failed: %s", str(error).splitlines()[0])

    async def stop(self) -> None:
        """Finish the round in progress (before the writer it uses stops)."""
        self._stop.set()
        await self._done.wait()
