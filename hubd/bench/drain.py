"""A queue that piled up while its next hop was down, drained when the hop comes back.

Owns: `hubd bench-queue --drain N`: fill a fresh queue with N messages for one next hop (as
if it had been down while they arrived), start a node on that queue and Postfix's smtp-sink
as the returning hop, and measure how fast the queue drains, and the peak memory of every
process of the node while it does.
Public: DrainResult, run_drain(), format_drain().
Failures: BenchError when smtp-sink is missing or a child does not start.
Limits: the messages are small (bodies stay in the queue file, as below the spool
threshold); the queue file lives under `directory` (a real filesystem: not tmpfs).
See also: hubd/bench_queue.py (claim time as the queue grows), docs/bench.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from hubd.bench.child import hubd_child
from hubd.bench.errors import BenchError
from hubd.bench.node import merge_settings, queue_drained, relay_settings, write_node_config
from hubd.bench.smtp_sink import smtp_sink
from hubd.bench.usage import UsageSampler
from hubd.config import HostPort
from hubd.loopback import free_loopback_address
from hubd.routing import Router, RouteTable
from hubd.waiting import wait_until
from storage import NewMessage, NewRecipient, Repository, Writer, open_database

_FILL_BATCH = 2000
SMTP_SINK = Path("/usr/sbin/smtp-sink")
_SINK_USER = "nobody"  # smtp-sink refuses to run as root


@dataclass(frozen=True, slots=True)
class DrainResult:
    queued: int
    seconds: float  # from the node's start until the queue was empty
    per_second: float
    peak_rss_mib: dict[str, float]  # per kind of process: the highest peak of any of them
    processes: int
    cpu_ms_per_message: float  # every process of the node
    peak_wal_mib: float  # the queue's write-ahead log, sampled while it drained


class _WalWatch:
    """The largest size the queue's WAL file reaches, sampled in a thread."""

    def __init__(self, wal: Path, interval: float = 0.2) -> None:
        self.peak = 0
        self._wal = wal
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-wal", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with contextlib.suppress(FileNotFoundError):
                self.peak = max(self.peak, self._wal.stat().st_size)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def _address() -> HostPort:
    host, port = free_loopback_address()
    return HostPort(host=host, port=port)


async def _fill(path: Path, next_hop: str, count: int) -> None:
    database = await open_database(path)
    writer = Writer(database.write_engine)
    writer.start()
    repository = Repository(database, writer)
    body = b"Subject: drain\r\n\r\n" + b"x" * 2000 + b"\r\n"
    started = time.time() - 3600
    try:
        for start in range(0, count, _FILL_BATCH):
            await asyncio.gather(
                *(
                    repository.enqueue(
                        NewMessage(
                            queue_id=f"D{i:08d}",
                            sender="bench@example.test",
                            recipients=[NewRecipient(f"r{i}@bench.test", next_hop)],
                            body=body,
                            received_at=started + i * 0.01,  # oldest first
                            message_id=None,
                            origin=f"drain.{i}",
                            client="bench",
                        )
                    )
                    for i in range(start, min(start + _FILL_BATCH, count))
                )
            )
    finally:
        await writer.stop()
        await database.close()


def run_drain(count: int, directory: Path, node_settings: dict[str, object]) -> DrainResult:
    """Fill, start the node and the sink, and time the drain."""
    if not SMTP_SINK.exists():
        raise BenchError(f"{SMTP_SINK} is missing (Debian package postfix)")
    root = Path(tempfile.mkdtemp(prefix="hubd-drain-", dir=directory))
    try:
        listen, hop = _address(), _address()
        settings = merge_settings(relay_settings(root / "node", listen, hop), node_settings)
        config = write_node_config(root / "hubd.toml", settings)
        next_hop = Router(config.local_domains, RouteTable(config.routes)).next_hop("bench.test")
        asyncio.run(_fill(config.node.data_dir / "queue.db", next_hop.key, count))
        with smtp_sink(SMTP_SINK, hop, user=_SINK_USER, log=root / "sink.log") as sink:
            started = time.monotonic()
            with hubd_child(
                ["serve", "-c", str(root / "hubd.toml")], listen, root / "node.log"
            ) as node:
                sampler = UsageSampler(node.pid)
                sampler.start()
                wal = _WalWatch(config.node.data_dir / "queue.db-wal")
                # Drained means the hop has every message, not only that the queue is empty
                # (a refused message would leave it as well, as a bounce).
                sink.wait_for(count, 3600, sink.check_alive)
                seconds = time.monotonic() - started
                wait_until(lambda: queue_drained(config), 60, "the queue to empty")
                usage = sampler.stop()
                peak_wal = wal.stop()
        peaks = {name: p.peak_rss_kib / 1024 for name, p in usage.processes.items()}
        processes = sum(p.count for p in usage.processes.values())
        cpu = usage.cpu_seconds * 1000 / count
        return DrainResult(count, seconds, count / seconds, peaks, processes, cpu, peak_wal / 2**20)
    except BenchError as error:
        log = root / "node.log"
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
        raise BenchError(f"{error}: {tail[0] if tail else 'no log'}") from None
    finally:
        shutil.rmtree(root, ignore_errors=True)


def format_drain(result: DrainResult) -> str:
    peaks = ", ".join(f"{name} {mib:.0f} MiB" for name, mib in sorted(result.peak_rss_mib.items()))
    return (
        f"drained {result.queued} queued messages in {result.seconds:.1f} s"
        f" = {result.per_second:.0f} msg/s (from the node's start, start-up included);"
        f" {result.cpu_ms_per_message:.2f} ms CPU per message; peak RSS per process: {peaks};"
        f" peak WAL {result.peak_wal_mib:.1f} MiB"
    )


__all__ = ["DrainResult", "format_drain", "run_drain"]
