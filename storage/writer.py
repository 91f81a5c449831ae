"""Group commit: one task owns the write connection and commits many callers' work at once.

Owns: the write connection; batching queued write operations into one transaction (one fsync);
the durable counters, kept in memory during a batch and written once at its end.
Public: Writer (start(), submit(), stop()), WriteOp, Bulk.
Failures: an operation that raises is rolled back alone (a savepoint per operation, or per
bulk group) and its caller gets the exception; a failed COMMIT fails every caller of that
batch.
Limits: operations are synchronous functions over a SQLAlchemy Connection, run in the
writer's own thread (one hop per batch, not per statement); keep them short. Batches
hold at most `max_batch` operations.
See also: storage/repository.py (the operations), LIBNOTES.md section 5 (group commit).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import Engine
from sqlalchemy.engine import Connection

from storage.sql import driver

log = logging.getLogger(__name__)

T = TypeVar("T")

# A bulk function runs many operations' payloads at once and returns one result per payload.
Bulk = Callable[[Connection, list[Any]], list[Any]]

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
    future: asyncio.Future[T] = field(init=False)
    result: Any = None
    error: BaseException | None = None


def _apply_one(conn: Connection, op: WriteOp[Any], labels: Counter[str]) -> None:
    try:
        with conn.begin_nested():
            op.result = op.apply(conn)
        labels[op.label] += 1
    except Exception as error:  # one caller's failure must not sink the batch
        op.error = error


def _apply_bulk(
    conn: Connection, bulk: Bulk, ops: list[WriteOp[Any]], labels: Counter[str]
) -> None:
    try:
        with conn.begin_nested():
            results = bulk(conn, [op.payload for op in ops])
    except Exception:  # find the one that failed: each on its own
        log.warning("a bulk write of %d operations failed; retrying one by one", len(ops))
        for op in ops:
            _apply_one(conn, op, labels)
        return
    for op, result in zip(ops, results, strict=True):
        op.result = result
        labels[op.label] += 1


def _apply_batch(conn: Connection, batch: list[WriteOp[Any]]) -> None:
    labels: Counter[str] = Counter()
    bulks: dict[Bulk, list[WriteOp[Any]]] = {}
    with conn.begin():
        for op in batch:
            if op.bulk is not None:
                bulks.setdefault(op.bulk, []).append(op)
            else:
                _apply_one(conn, op, labels)
        for bulk, ops in bulks.items():
            _apply_bulk(conn, bulk, ops, labels)
        # commits:<label> counts transactions that held such work, ops:<label> the work.
        bumps = [(f"commits:{label}", 1) for label in labels]
        bumps += [(f"ops:{label}", count) for label, count in labels.items()]
        driver(conn).executemany(_BUMP, bumps)


class Writer:
    """The single owner of the write connection; callers `await submit(op)`."""

    def __init__(self, engine: Engine, *, max_batch: int = 512) -> None:
        self._engine = engine
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="storage-writer")
        self._max_batch = max_batch
        self._queue: asyncio.Queue[WriteOp[Any] | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.operations = 0

    def start(self) -> None:
        """Start the writer task."""
        self._task = asyncio.create_task(self._run(), name="storage-writer")

    async def submit(
        self,
        label: str,
        apply: Callable[[Connection], T],
        *,
        bulk: Bulk | None = None,
        payload: Any = None,
    ) -> T:
        """Run `apply` in the next batch; return once the batch holding it is committed."""
        if self._task is None or self._task.done():
            raise RuntimeError("storage writer is not running")
        op: WriteOp[T] = WriteOp(label, apply, bulk, payload)
        op.future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(op)
        return await op.future

    async def stop(self) -> None:
        """Commit what is queued, then stop."""
        if self._task is None:
            return
        self._queue.put_nowait(None)
        await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        conn = await loop.run_in_executor(self._thread, self._engine.connect)
        try:
            stopping = False
            while not stopping:
                first = await self._queue.get()
                batch, stopping = self._drain(first)
                if batch:
                    await self._commit(conn, batch)
        finally:
            await loop.run_in_executor(self._thread, conn.close)
            self._thread.shutdown(wait=True)

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

    async def _commit(self, conn: Connection, batch: list[WriteOp[Any]]) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._thread, _apply_batch, conn, batch)
        except Exception as error:
            log.exception("commit of %d operations failed", len(batch))
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
