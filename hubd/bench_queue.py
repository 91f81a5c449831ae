"""How the scheduler's cost grows with the queue: time to claim and record due work.

Owns: `hubd bench-queue`: fill a fresh queue database with N messages (half due, half due
later), then time claiming a batch of due recipients and recording their outcomes.
Public: QueueBenchResult, run_queue_bench(), format_queue_bench().
Limits: measures storage alone (no SMTP, no couriers); bodies are small.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from storage import (
    NewMessage,
    NewRecipient,
    RecipientOutcome,
    RecipientState,
    Repository,
    Writer,
    open_database,
)

_FILL_BATCH = 2000


@dataclass(frozen=True, slots=True)
class QueueBenchResult:
    queued: int
    claim_ms: float  # median time to claim one batch
    record_ms: float  # median time to record that batch's outcomes
    batch: int


async def _fill(repository: Repository, count: int, now: float) -> None:
    body = b"Subject: bench\r\n\r\nqueue bench\r\n"
    for start in range(0, count, _FILL_BATCH):
        await asyncio.gather(
            *(
                repository.enqueue(
                    NewMessage(
                        queue_id=f"B{i:08d}",
                        sender="bench@example.test",
                        recipients=[NewRecipient(f"r{i}@example.test", "mx:example.test")],
                        body=body,
                        # Half are due now; the other half wait an hour, as deferred mail does.
                        received_at=now - 1 if i % 2 else now + 3600,
                        message_id=None,
                        origin=f"bench.{i}",
                        client="bench",
                    )
                )
                for i in range(start, min(start + _FILL_BATCH, count))
            )
        )


async def _measure(directory: Path, count: int, batch: int, rounds: int) -> QueueBenchResult:
    database = await open_database(directory / "queue.db")
    writer = Writer(database.write_engine)
    writer.start()
    repository = Repository(database, writer)
    try:
        now = time.time()
        await _fill(repository, count, now)
        claims: list[float] = []
        records: list[float] = []
        # Only rounds that find a full batch of due work count (half the queue is due).
        for round_ in range(max(1, min(rounds, count // 2 // batch))):
            started = time.perf_counter()
            claimed = (await repository.claim_due(now, batch, f"bench-{round_}")).recipients
            claims.append(time.perf_counter() - started)
            outcomes = [
                RecipientOutcome(
                    c,
                    RecipientState.PENDING,
                    "mx:example.test",
                    "451 4.4.1 bench",
                    now + 7200,
                )
                for c in claimed
            ]
            started = time.perf_counter()
            await repository.record_outcomes(outcomes)
            records.append(time.perf_counter() - started)
        return QueueBenchResult(
            count, statistics.median(claims) * 1000, statistics.median(records) * 1000, batch
        )
    finally:
        await writer.stop()
        await database.close()


def run_queue_bench(sizes: list[int], batch: int = 256, rounds: int = 20) -> list[QueueBenchResult]:
    """Measure each queue size in a fresh temporary database."""
    results = []
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="hubd-bench-queue-") as directory:
            results.append(asyncio.run(_measure(Path(directory), size, batch, rounds)))
    return results


def format_queue_bench(results: list[QueueBenchResult]) -> str:
    """A table: queued messages, median claim and record time per batch."""
    lines = [
        f"{'queued':>8}  {'claim ' + str(results[0].batch) + ' (ms)':>16}  {'record (ms)':>12}"
    ]
    lines += [f"{r.queued:>8}  {r.claim_ms:>16.2f}  {r.record_ms:>12.2f}" for r in results]
    return "\n".join(lines)
