"""GET /metrics: every process's event counters, summed, and the queue's state, read now.

Owns: one scrape: the counters and histograms of hubd/metrics.py (from every process's
files in <data_dir>/metrics/ in `hubd serve`, prometheus-client's multiprocess mode; from
this process's memory elsewhere), and the gauges read from the queue at scrape time:
`hubd_queue_depth{next_hop}`, `hubd_queue_oldest_message_age_seconds`,
`hubd_shadow_held`, `hubd_shadow_notices_owed`, `hubd_backpressure_level`, and the queue's
durable commit counters (`hubd_storage_commits_total{kind}`, `..._operations_total`).
Public: scrape(), queue_families(), level_family(), Snapshot, CONTENT_TYPE.
Limits: a state read from the database is exact for the whole node whatever process
changed it, where a gauge kept by each process would need summing rules; events are
counted where they happen, since the queue keeps no record of most of them.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Mapping

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from storage import QueueReader
from storage.reader import QueueDepths

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Snapshot(Collector):
    """Metric families made for one scrape."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


def _events() -> Collector:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # hubd serve: hubd/metrics_dir.py
        return MultiProcessCollector(None)  # type: ignore[no-untyped-call]
    return Snapshot(REGISTRY.collect())


def _stat_family(name: str, text: str, prefix: str, stats: Mapping[str, int]) -> Metric:
    family = CounterMetricFamily(name, text, labels=["kind"])
    for key in sorted(stats):
        if key.startswith(prefix):
            family.add_metric([key.removeprefix(prefix)], stats[key])
    return family


def level_family(level: int) -> Metric:
    return GaugeMetricFamily(
        "hubd_backpressure_level", "Back-pressure level: 0 Normal, 1 Medium, 2 High.", value=level
    )


def queue_families(depths: QueueDepths, stats: Mapping[str, int], now: float) -> list[Metric]:
    """The gauges of one look at the queue, and its durable commit counters."""
    depth = GaugeMetricFamily(
        "hubd_queue_depth",
        "Recipients waiting (pending or held) per next hop.",
        labels=["next_hop"],
    )
    for hop in depths.hops:
        depth.add_metric([hop.next_hop], hop.pending + hop.held)
    oldest = depths.oldest
    return [
        depth,
        GaugeMetricFamily(
            "hubd_queue_oldest_message_age_seconds",
            "Age of the oldest message with a recipient waiting (0: none).",
            value=max(0.0, now - oldest) if oldest is not None else 0.0,
        ),
        GaugeMetricFamily(
            "hubd_shadow_held",
            "Shadows held: copies until a peer delivers or discards them.",
            value=depths.shadows_held,
        ),
        GaugeMetricFamily(
            "hubd_shadow_notices_owed",
            "Discard notices owed to upstream peers, not yet fetched.",
            value=depths.notices_owed,
        ),
        _stat_family(
            "hubd_storage_commits",
            "Commits that held work of each kind, since the queue was made.",
            "commits:",
            stats,
        ),
        _stat_family(
            "hubd_storage_operations",
            "Operations of each kind committed, since the queue was made.",
            "ops:",
            stats,
        ),
    ]


async def scrape(reader: QueueReader | None, level: int, now: float) -> bytes:
    """The text of one /metrics answer (the queue's gauges once the queue is open)."""
    registry = CollectorRegistry()
    registry.register(_events())
    families = [level_family(level)]
    if reader is not None:
        depths, stats = await reader.depths(), await reader.stats()
        families += queue_families(depths, stats, now)
    registry.register(Snapshot(families))
    # Reading every process's files is blocking I/O: not on the event loop.
    return await asyncio.to_thread(generate_latest, registry)
