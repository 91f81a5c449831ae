"""One `hubd bench` run with hubd's own load generator: into a node, a server, or the sink.

Owns: starting what the mode needs (a node delivering into Maildir, or the storage-free
sink, each a child process), driving the load at it, waiting for delivery, reading the
group-commit counters, and handing it all to the report.
Public: run_bench(), wait_for_delivery(), count_delivered().
Failures: BenchError when a child does not start or delivery does not finish in time.
See also: hubd/bench/load.py, hubd/bench/report.py, hubd/bench/compare.py (against Postfix).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from hubd.bench.child import hubd_child
from hubd.bench.errors import BenchError
from hubd.bench.load import LoadResult, drive_load
from hubd.bench.node import mailbox_folder, maildir_settings, write_node_config
from hubd.bench.progress import Bars
from hubd.bench.report import BenchReport, summarise
from hubd.bench.settings import BenchMode, BenchSettings
from hubd.config import HostPort
from hubd.loopback import free_loopback_address
from hubd.waiting import wait_until
from storage.summary import read_counters


def count_delivered(folder: Path) -> tuple[int, float]:
    """How many files are in a Maildir's new/ and the latest of their mtimes."""
    try:
        entries = [entry.stat().st_mtime for entry in os.scandir(folder) if entry.is_file()]
    except FileNotFoundError:
        return 0, 0.0
    return len(entries), max(entries, default=0.0)


def wait_for_delivery(
    folder: Path,
    count: int,
    timeout: float,
    progress: Callable[[int], None],
    alive: Callable[[], bool],
) -> float:
    """Poll a Maildir's new/ until `count` files are there; when the last one was written."""

    def done() -> bool:
        alive()
        found, _ = count_delivered(folder)
        progress(found)
        return found >= count

    try:
        wait_until(done, timeout, f"{count} deliveries into {folder}")
    except TimeoutError as error:
        raise BenchError(f"{error} ({count_delivered(folder)[0]} arrived)") from None
    return count_delivered(folder)[1]


def _load(settings: BenchSettings, target: HostPort, bars: Bars) -> LoadResult:
    bar = bars.bar("sending", settings.count)
    try:
        return asyncio.run(
            drive_load(
                target,
                count=settings.count,
                size=settings.size,
                concurrency=settings.concurrency,
                progress=bar.advance,
            )
        )
    finally:
        bar.close()


def run_bench(settings: BenchSettings, *, show_progress: bool | None = None) -> BenchReport:
    """Run the load against the target of `settings.mode` and report what was measured."""
    with Bars(show_progress) as bars, ExitStack() as stack:
        if settings.server is not None:
            load = _load(settings, settings.server, bars)
            return summarise(settings, str(settings.server), load)
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hubd-bench-")))
        target = HostPort.parse("{}:{}".format(*free_loopback_address()))
        log = directory / "child.log"
        if settings.mode is BenchMode.CEILING:
            with hubd_child(["bench-sink", "--listen", str(target)], target, log):
                load = _load(settings, target, bars)
            return summarise(settings, str(target), load)
        config = write_node_config(directory / "hubd.toml", maildir_settings(directory, target))
        folder = mailbox_folder(config)
        with hubd_child(["serve", "-c", str(directory / "hubd.toml")], target, log) as node:
            load = _load(settings, target, bars)
            accepted = len(load.latencies)
            bar = bars.bar("delivering", accepted)
            delivered_at = wait_for_delivery(
                folder, accepted, settings.timeout, bar.set, node.check_alive
            )
            bar.close()
            delivered = count_delivered(folder)[0]
        return summarise(
            settings,
            str(target),
            load,
            delivered_at=delivered_at,
            delivered=delivered,
            counters=read_counters(config.node.data_dir / "queue.db"),
        )
