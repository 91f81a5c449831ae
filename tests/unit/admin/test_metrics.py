"""How tracking events count, and the gauges one look at the queue gives: pure values."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from hubd.admin.metrics import Snapshot, level_family, queue_families
from hubd.metrics import count_event
from hubd.tracking import TrackingEvent
from storage.reader import HopDepth, QueueDepths


def _now(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class TestCountEvent:
    def test_events_count_per_message_or_per_recipient(self) -> None:
        """RECEIVE, RESUBMIT and UNPROTECTED count a message; SEND, DELIVER, DEFER,
        DUPLICATE and SHADOW each recipient; DSN its kind."""
        names = [
            ("hubd_smtp_received_total", {}),
            ("hubd_delivery_delivered_total", {"via": "relay"}),
            ("hubd_delivery_delivered_total", {"via": "local"}),
            ("hubd_delivery_deferred_total", {}),
            ("hubd_dsn_generated_total", {"kind": "delay"}),
            ("hubd_shadow_resubmissions_total", {}),
            ("hubd_delivery_duplicates_dropped_total", {}),
            ("hubd_shadow_created_total", {}),
            ("hubd_shadow_unprotected_total", {}),
        ]
        before = [_now(n, **labels) for n, labels in names]
        count_event(TrackingEvent.RECEIVE, 3, None)
        count_event(TrackingEvent.SEND, 2, "250 ok")
        count_event(TrackingEvent.DELIVER, 1, None)
        count_event(TrackingEvent.DEFER, 4, "451 later")
        count_event(TrackingEvent.DSN, 2, "delay")
        count_event(TrackingEvent.RESUBMIT, 5, None)
        count_event(TrackingEvent.DUPLICATE, 2, None)
        count_event(TrackingEvent.SHADOW, 3, None)
        count_event(TrackingEvent.POISON, 1, None)
        count_event(TrackingEvent.UNPROTECTED, 2, None)
        after = [_now(n, **labels) for n, labels in names]
        assert [a - b for a, b in zip(after, before, strict=True)] == [1, 2, 1, 4, 1, 1, 2, 3, 1]


class TestQueueFamilies:
    def test_depth_per_hop_and_the_oldest_age(self) -> None:
        """Pending and held count towards their hop's depth; the age is of the oldest."""
        depths = QueueDepths(
            (HopDepth("local", 1, 0, 990.0), HopDepth("route:x", 2, 3, 900.0)), 4, 5
        )
        stats = {"commits:enqueue": 7, "ops:enqueue": 20, "lock_wait_us_le:100": 3}
        registry = CollectorRegistry()
        registry.register(Snapshot([*queue_families(depths, stats, now=1000.0), level_family(2)]))
        samples = {
            (s.name, tuple(s.labels.items())): s.value
            for family in text_string_to_metric_families(generate_latest(registry).decode())
            for s in family.samples
        }
        assert samples == {
            ("hubd_queue_depth", (("next_hop", "local"),)): 1,
            ("hubd_queue_depth", (("next_hop", "route:x"),)): 5,
            ("hubd_queue_oldest_message_age_seconds", ()): 100.0,
            ("hubd_shadow_held", ()): 4,
            ("hubd_shadow_notices_owed", ()): 5,
            ("hubd_backpressure_level", ()): 2,
            ("hubd_storage_commits_total", (("kind", "enqueue"),)): 7,
            ("hubd_storage_operations_total", (("kind", "enqueue"),)): 20,
        }

    def test_an_empty_queue_is_age_zero(self) -> None:
        """No message waiting: no depth samples, and an oldest age of 0."""
        (depth, oldest, *_rest) = queue_families(QueueDepths((), 0, 0), {}, now=1000.0)
        assert depth.samples == []
        assert oldest.samples[0].value == 0.0
