"""The report of one `hubd bench` run: rates, percentiles, delivery and group commit.

Owns: turning a run's raw timings and counters into figures, and printing them.
Public: BenchReport, percentile(), summarise(), format_report().
Failures: ValueError from percentile() for no values or a percentile outside 0-100.
See also: hubd/bench/comparison.py (the side-by-side report), storage/writer.py (counters).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hubd.bench.load import LoadResult
from hubd.bench.settings import BenchMode, BenchSettings


@dataclass(frozen=True, slots=True)
class BenchReport:
    """The figures of one run; None where the mode cannot measure them."""

    mode: BenchMode
    target: str
    count: int
    size: int
    concurrency: int
    accepted: int
    refused: int
    refusals: Mapping[str, int]
    accept_seconds: float
    accepted_per_second: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    delivered: int | None = None
    delivery_seconds: float | None = None
    delivered_per_second: float | None = None
    commits: int | None = None
    enqueued: int | None = None
    commits_per_second: float | None = None
    messages_per_commit: float | None = None
    # The bucket bound (microseconds; None past the last) the 99th write-lock wait falls in.
    lock_wait_p99_us: int | None = None
    lock_waits: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        data = {name: getattr(self, name) for name in self.__slots__}
        data["mode"] = str(self.mode)
        data["refusals"] = dict(self.refusals)
        return data


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of `values`, interpolating between ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0-100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def lock_wait_p99(counters: Mapping[str, int]) -> tuple[int | None, int]:
    """The write-lock wait histogram's 99th percentile bucket bound, and how many waits."""
    prefix = "lock_wait_us_le:"
    buckets = sorted(
        (math.inf if name[len(prefix) :] == "inf" else int(name[len(prefix) :]), count)
        for name, count in counters.items()
        if name.startswith(prefix)
    )
    total = sum(count for _, count in buckets)
    seen = 0
    for bound, count in buckets:
        seen += count
        if seen >= 0.99 * total:
            return (None if bound == math.inf else int(bound)), total
    return None, total


def summarise(
    settings: BenchSettings,
    target: str,
    load: LoadResult,
    *,
    delivered_at: float | None = None,
    delivered: int | None = None,
    counters: Mapping[str, int] | None = None,
) -> BenchReport:
    """Turn the raw timings and counters of a run into its report."""
    accepted = len(load.latencies)
    seconds = max(load.seconds, 1e-9)
    delivery_seconds = None if delivered_at is None else delivered_at - load.started_at
    commits = None if counters is None else counters.get("commits:enqueue", 0)
    enqueued = None if counters is None else counters.get("ops:enqueue", 0)
    lock_p99, lock_waits = lock_wait_p99(counters) if counters is not None else (None, None)
    return BenchReport(
        mode=settings.mode,
        target=target,
        count=settings.count,
        size=settings.size,
        concurrency=settings.concurrency,
        accepted=accepted,
        refused=sum(load.refusals.values()),
        refusals=dict(load.refusals),
        accept_seconds=load.seconds,
        accepted_per_second=accepted / seconds,
        latency_p50_ms=percentile(load.latencies, 50) * 1000 if accepted else None,
        latency_p99_ms=percentile(load.latencies, 99) * 1000 if accepted else None,
        delivered=delivered,
        delivery_seconds=delivery_seconds,
        delivered_per_second=(
            delivered / max(delivery_seconds, 1e-9)
            if delivered is not None and delivery_seconds is not None
            else None
        ),
        commits=commits,
        enqueued=enqueued,
        commits_per_second=None if commits is None else commits / seconds,
        messages_per_commit=enqueued / commits if commits and enqueued is not None else None,
        lock_wait_p99_us=lock_p99,
        lock_waits=lock_waits,
    )


def format_report(report: BenchReport) -> str:
    """The report as lines for a terminal."""
    lines = [
        f"hubd bench: {report.count} messages of {report.size} bytes over "
        f"{report.concurrency} session{'' if report.concurrency == 1 else 's'} to"
        f" {report.target} ({report.mode})",
        f"{'accepted':<20}{report.accepted}/{report.count} in {report.accept_seconds:.2f} s"
        f" = {report.accepted_per_second:.1f} msg/s",
    ]
    if report.latency_p50_ms is not None and report.latency_p99_ms is not None:
        lines.append(
            f"{'end of DATA to 250':<20}p50 {report.latency_p50_ms:.2f} ms,"
            f" p99 {report.latency_p99_ms:.2f} ms"
        )
    lines.extend(
        f"{'refused':<20}{count} x {reply}" for reply, count in sorted(report.refusals.items())
    )
    if report.delivered is not None and report.delivery_seconds is not None:
        lines.append(
            f"{'delivered':<20}{report.delivered} within {report.delivery_seconds:.2f} s of the"
            f" start = {report.delivered_per_second or 0:.1f} msg/s"
        )
    if report.commits is not None and report.commits_per_second is not None:
        lines.append(
            f"{'group commit':<20}{report.commits} commits for {report.enqueued} messages:"
            f" {report.commits_per_second:.1f} commits/s vs {report.accepted_per_second:.1f}"
            f" msg/s = {report.messages_per_commit or 0:.2f} messages per commit"
        )
    if report.lock_waits:
        bound = report.lock_wait_p99_us
        shown = f"<= {bound / 1000:g} ms" if bound is not None else "> 100 ms"
        lines.append(
            f"{'write lock wait':<20}p99 {shown} over {report.lock_waits} transactions"
            " (every process of the node)"
        )
    return "\n".join(lines)
