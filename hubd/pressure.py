"""Measuring back pressure: sampling a node's resources once a second, and telling each change.

Owns: the probes (free space of the queue's filesystem, resident size of the node's
processes, recipients in the queue, bytes in flight), the loop that feeds them to
hubd/backpressure.py's Levels, logging each change of level once with the resource and the
values that caused it, and recording it as a PRESSURE tracking event.
Public: Gauge, gauge_of(), owner_probes(), thresholds_of(), disk_free(), resident_size(),
queued_recipients(), describe(), on_loop(), threaded(), INTERVAL.
Failures: a probe that fails (a vanished pid, a locked or missing queue) is skipped for that
round and logged once; the level then stays where it was.
Limits: the queued count is every recipient row (pending, held, in delivery or shadowed):
one count over the smallest index, a few milliseconds at 100,000 rows, run off the loop.
See also: docs/design.md (Back pressure: who measures what), hubd/supervisor.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path

from hubd.backpressure import Change, Level, Levels, Thresholds
from hubd.config import BackpressureConfig, format_size
from hubd.tracking import Tracker, TrackingEvent

log = logging.getLogger(__name__)

INTERVAL = 1.0  # seconds between samples
_PAGE = os.sysconf("SC_PAGE_SIZE")

Probe = Callable[[], Awaitable[int]]
SIZES = frozenset({"disk_free", "memory", "inflight"})


def thresholds_of(config: BackpressureConfig, *, inflight_share: int = 1) -> dict[str, Thresholds]:
    """The thresholds of every resource, from `[backpressure]`; the in-flight ones divided
    among `inflight_share` acceptors (each watches only its own bytes)."""
    share = max(1, inflight_share)
    return {
        "disk_free": Thresholds(config.disk_free_medium, config.disk_free_high, falling=True),
        "memory": Thresholds(config.memory_medium, config.memory_high),
        "inflight": Thresholds(config.inflight_medium // share, config.inflight_high // share),
        "queued": Thresholds(config.queued_medium, config.queued_high),
    }


def disk_free(directory: Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem holding `directory`."""
    stats = os.statvfs(directory)
    return stats.f_bavail * stats.f_frsize


def resident_size(pids: Iterable[int]) -> int:
    """The resident set size of these processes together (those gone count nothing)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    return total


def queued_recipients(database: Path) -> int:
    """Recipient rows in the queue at `database`, read through a read-only connection."""
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1)
    try:
        return int(conn.execute("SELECT count(*) FROM recipients").fetchone()[0])
    finally:
        conn.close()


def _shown(resource: str, value: int) -> str:
    return format_size(value) if resource in SIZES else str(value)


def describe(change: Change) -> str:
    """One log line's worth: the resource, its value, its thresholds, the levels."""
    t = change.thresholds
    return (
        f"{change.resource} = {_shown(change.resource, change.value)} (medium "
        f"{_shown(change.resource, t.medium)}, high {_shown(change.resource, t.high)}): "
        f"{change.old} -> {change.new}"
    )


class Gauge:
    """Samples probes, keeps the levels, reports the node's level when it changes."""

    def __init__(
        self,
        levels: Levels,
        probes: Mapping[str, Probe],
        *,
        tracker: Tracker | None,
        on_change: Callable[[Level], None],
        interval: float = INTERVAL,
    ) -> None:
        self._levels = levels
        self._probes = {k: p for k, p in probes.items() if k in levels.watched}
        self._tracker = tracker
        self._on_change = on_change
        self._interval = interval
        self._failing: set[str] = set()
        self._stop = asyncio.Event()

    @property
    def level(self) -> Level:
        return self._levels.level

    async def run(self) -> None:
        """Sample until stop(); the first sample is taken at once."""
        while not self._stop.is_set():
            await self.sample()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._stop.wait()

    def stop(self) -> None:
        self._stop.set()

    async def sample(self) -> Level:
        """Read every probe once, log and track what changed; the node's level after."""
        before = self._levels.level
        readings: dict[str, int] = {}
        for resource, probe in self._probes.items():
            try:
                readings[resource] = await probe()
            except (OSError, sqlite3.Error) as error:
                if resource not in self._failing:
                    log.warning("back pressure: cannot measure %s: %s", resource, error)
                self._failing.add(resource)
            else:
                self._failing.discard(resource)
        for change in self._levels.update(readings):
            self._report(change)
        after = self._levels.level
        if after is not before:
            self._on_change(after)
        return after

    def _report(self, change: Change) -> None:
        worse = change.new > change.old
        (log.warning if worse else log.info)("back pressure: %s", describe(change))
        if self._tracker is not None:
            self._tracker.record(
                TrackingEvent.PRESSURE,
                queue_id="",
                sender="",
                recipients=[],
                resource=change.resource,
                level=str(change.new),
                previous=str(change.old),
                value=change.value,
                medium=change.thresholds.medium,
                high=change.thresholds.high,
            )


def on_loop(value: Callable[[], int]) -> Probe:
    """A cheap probe run on the loop itself."""

    async def probe() -> int:
        return value()

    return probe


def threaded(value: Callable[[], int]) -> Probe:
    """A probe that does I/O, run off the loop."""

    async def probe() -> int:
        return await asyncio.to_thread(value)

    return probe


def owner_probes(
    data_dir: Path, database: Path, pids: Callable[[], Iterable[int]]
) -> dict[str, Probe]:
    """What the queue's owner measures for the whole node: the queue's filesystem, the
    resident size of `pids()` (all the node's processes), the queued recipients."""
    return {
        # statvfs and a few /proc reads: microseconds, so on the loop.
        "disk_free": on_loop(lambda: disk_free(data_dir)),
        "memory": on_loop(lambda: resident_size(pids())),
        "queued": threaded(lambda: queued_recipients(database)),
    }


def gauge_of(
    config: BackpressureConfig,
    probes: Mapping[str, Probe],
    *,
    tracker: Tracker | None,
    on_change: Callable[[Level], None],
    inflight_share: int = 1,
) -> Gauge | None:
    """A Gauge of the resources these probes measure, or None when none has a threshold."""
    thresholds = thresholds_of(config, inflight_share=inflight_share)
    levels = Levels({k: t for k, t in thresholds.items() if k in probes}, config.hysteresis)
    if not levels.watched:
        return None
    return Gauge(levels, probes, tracker=tracker, on_change=on_change)
