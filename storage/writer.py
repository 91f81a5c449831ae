"""Group commit: one task owns the write connection and commits many callers' work at once.

Owns: the write connection; batching queued write operations into one transaction (one fsync);
the durable counters, kept in memory during a batch and written once at its end.
Public: Writer (start(), submit(), stop()), WriteOp, Bulk, CommitObserver.
Failures: an operation that raises is rolled back alone (the batch is run again with a
savepoint per operation) and its caller gets the exception; a failed COMMIT fails every
caller of that batch.
Durability: a batch is fsynced at commit (synchronous=FULL) when any operation in it is
durable, which is every one but the claims of due work.
Limits: operations are synchronous functions over a SQLAlchemy Connection, run in the
writer's own thread (one hop per batch, not per statement); keep them short. Batches
hold at most `max_batch` operations. Several processes' writers on one file take turns
through a blocking flock on `write.lock` around each transaction, never meeting in
SQLite's busy handler (which sleeps 1-100 ms); the wait is counted in a histogram
(`lock_wait_us_le:<bound>` in the stats table).
See also: storage/repository.py (the operations), LIBNOTES.md section 5 (group commit).
"""

from __future__ import annotations

import asyncio
import bisect
import fcntl
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from sqlalchemy import Engine
from sqlalchemy.engine import Connection

from storage.errors import log_failure
from storage.sql import driver

log = logging.getLogger(__name__)

T = TypeVar("T")

# A bulk function runs many operations' payloads at once and returns one result per payload.
Bulk = Callable[[Connection, list[Any]], list[Any]]
# Told of each committed batch: its operations, seconds holding the lock, seconds waiting
# for it (the node's metrics; called in the writer's thread).
CommitObserver = Callable[[int, float, float], None]

# Upper bounds (microseconds) of the write-lock wait histogram; the last bucket is "more".
LOCK_WAIT_BOUNDS_US = (100, 1_000, 5_000, 10_000, 50_000, 100_000)

_BUMP = (
    "INSERT INTO stats (name, value) VALUES (?, ?)"
    " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value"
)


@dataclass(slots=True)
class WriteOp(Generic[T]):
    """A unit of work for the writer: `apply` runs inside the batch transaction.

    Operations with the same `bulk` function run together as one call over all their
    payloads (one statement per table for a whole batch of intakes or outcomes); if that
    call fails, each falls back to its own `apply` in its own savepoint.
    """

    label: str
    apply: Callable[[Connection], T]
    bulk: Bulk | None = None
    payload: Any = None
    # False: losing this work in a power cut is harmless (a lease, say: every lease is stale
    # at the next start), so a batch of nothing else is committed without an fsync.
    durable: bool = True
    future: asyncio.Future[T] = field(init=False)
    result: Any = None
    error: BaseException | None = None


class _OperationFailed(Exception):
    """An operation raised on the fast path: the batch is run again, carefully."""


def _apply_one(conn: Connection, op: WriteOp[Any], labels: Counter[str], careful: bool) -> None:
    if not careful:
        try:
            op.result = op.apply(conn)
        except Exception as error:
            raise _OperationFailed from error
        labels[op.label] += 1
        return
    try:
        with conn.begin_nested():
            op.result = op.apply(conn)
        labels[op.label] += 1
    except Exception as error:  # one caller's failure must not sink the batch
        op.error = error


def _apply_bulk(
    conn: Connection, bulk: Bulk, ops: list[WriteOp[Any]], labels: Counter[str], careful: bool
) -> None:
    if careful:  # each on its own, to find the one that failed
        for op in ops:
            _apply_one(conn, op, labels, careful=True)
        return
    try:
        results = bulk(conn, [op.payload for op in ops])
    except Exception as error:
        raise _OperationFailed from error
    for op, result in zip(ops, results, strict=True):
        op.result = result
        labels[op.label] += 1


def _lock_wait_bucket(waited_us: float) -> str:
    index = bisect.bisect_left(LOCK_WAIT_BOUNDS_US, waited_us)
    bound = str(LOCK_WAIT_BOUNDS_US[index]) if index < len(LOCK_WAIT_BOUNDS_US) else "inf"
    return f"lock_wait_us_le:{bound}"


def _set_durability(conn: Connection, batch: list[WriteOp[Any]]) -> None:
    # WAL with synchronous=NORMAL commits without an fsync and stays consistent; the next
    # FULL commit's fsync covers the frames before it too.
    mode = "FULL" if any(op.durable for op in batch) else "NORMAL"
    info = conn.info
    if info.get("synchronous") != mode:
        driver(conn).execute(f"PRAGMA synchronous={mode}")
        info["synchronous"] = mode


def _run(conn: Connection, batch: list[WriteOp[Any]], waited_us: float, careful: bool) -> None:
    labels: Counter[str] = Counter()
    bulks: dict[Bulk, list[WriteOp[Any]]] = {}
    _set_durability(conn, batch)
    with conn.begin():
        for op in batch:
            if op.bulk is not None:
                bulks.setdefault(op.bulk, []).append(op)
            else:
                _apply_one(conn, op, labels, careful)
        for bulk, ops in bulks.items():
            _apply_bulk(conn, bulk, ops, labels, careful)
        # commits:<label> counts transactions that held such work, ops:<label> the work.
        bumps = [(f"commits:{label}", 1) for label in labels]
        bumps += [(f"ops:{label}", count) for label, count in labels.items()]
        bumps.append((_lock_wait_bucket(waited_us), 1))
        driver(conn).executemany(_BUMP, bumps)


def _apply_batch(conn: Connection, batch: list[WriteOp[Any]], waited_us: float) -> None:
    """Run a batch in one transaction: with no savepoint at all, unless an operation fails;
    then the whole batch is rolled back and run again with a savepoint per operation, so
    only the failing one fails (savepoints were a tenth of a node's CPU)."""
    try:
        _run(conn, batch, waited_us, careful=False)
    except _OperationFailed as failure:
        log.warning("a write batch failed (%r); running it again one by one", failure.__cause__)
        for op in batch:
            op.result = op.error = None
        _run(conn, batch, waited_us, careful=True)


class _WriteLock:
    """flock on <data_dir>/write.lock: the writers of one file take turns, in any process."""

    def __init__(self, path: Path | None) -> None:
        self._fd = (
            -1 if path is None else os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        )

    def run(self, apply: Callable[[float], None]) -> float:
        """Run `apply` holding the lock, telling it how long getting it took (microseconds,
        also returned)."""
        started = time.perf_counter()
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        waited_us = (time.perf_counter() - started) * 1e6
        try:
            apply(waited_us)
            return waited_us
        finally:
            if self._fd >= 0:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class Writer:
    """The single owner of the write connection; callers `await submit(op)`."""

    def __init__(
        self,
        engine: Engine,
        *,
        lock: Path | None = None,
        max_batch: int = 512,
        on_commit: CommitObserver | None = None,
    ) -> None:
        self._engine = engine
        self._on_commit = on_commit
        self._lock = _WriteLock(lock)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="storage-writer")
        self._max_batch = max_batch
        self._queue: asyncio.Queue[WriteOp[Any] | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False
        self._done = asyncio.Event()
        self.batches = 0
        self.operations = 0

    def start(self) -> None:
        """Run the writer in a task of its own (for callers with no TaskGroup)."""
        self._task = asyncio.create_task(self.run(), name="storage-writer")

    async def submit(
        self,
        label: str,
        apply: Callable[[Connection], T],
        *,
        bulk: Bulk | None = None,
        payload: Any = None,
        durable: bool = True,
    ) -> T:
        """Run `apply` in the next batch; return once the batch holding it is committed
        (and, when `durable`, fsynced).

        Work submitted before run() starts waits for it; after stop(), none is taken.
        """
        if self._closed:
            raise RuntimeError("storage writer is not running")
        op: WriteOp[T] = WriteOp(label, apply, bulk, payload, durable)
        op.future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(op)
        return await op.future

    async def stop(self) -> None:
        """Commit what is queued, then stop."""
        if self._closed:
            return
        self._closed = True
        self._queue.put_nowait(None)
        if self._started:
            await self._done.wait()

    async def run(self) -> None:
        """Commit batches until stop(); the writer's whole life."""
        self._started = True
        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(self._thread, self._engine.connect)
        except BaseException:
            self._closed = True
            self._done.set()
            self._thread.shutdown(wait=False)
            raise
        try:
            stopping = False
            while not stopping:
                first = await self._queue.get()
                batch, stopping = self._drain(first)
                if batch:
                    await self._commit(conn, batch)
        finally:
            self._closed = True
            await loop.run_in_executor(self._thread, conn.close)
            self._thread.shutdown(wait=True)
            self._lock.close()
            self._done.set()

    def _drain(self, first: WriteOp[Any] | None) -> tuple[list[WriteOp[Any]], bool]:
        # Whatever queued up while the last commit was syncing goes into this one.
        batch: list[WriteOp[Any]] = []
        item = first
        while True:
            if item is None:
                return batch, True
            batch.append(item)
            if len(batch) >= self._max_batch or self._queue.empty():
                return batch, False
            item = self._queue.get_nowait()

    def _locked_batch(self, conn: Connection, batch: list[WriteOp[Any]]) -> None:
        started = time.perf_counter()
        waited_us = self._lock.run(lambda waited_us: _apply_batch(conn, batch, waited_us))
        if self._on_commit is not None:
            waited = waited_us / 1e6
            self._on_commit(len(batch), time.perf_counter() - started - waited, waited)

    async def _commit(self, conn: Connection, batch: list[WriteOp[Any]]) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._thread, self._locked_batch, conn, batch)
        except Exception as error:
            log_failure(log, f"commit of {len(batch)} operations", error)
            for op in batch:
                op.error = op.error or error
        self.batches += 1
        self.operations += len(batch)
        for op in batch:
            if op.future.done():  # the caller went away (its session was cancelled)
                continue
            if op.error is not None:
                op.future.set_exception(op.error)
            else:
                op.future.set_result(op.result)


__all__ = ["WriteOp", "Writer"]
