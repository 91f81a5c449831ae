"""The node's event metrics: counters of what happened to mail, commit and DNS histograms.

Owns: every prometheus-client metric a process of the node updates (names
`hubd_<subsystem>_<thing>`), and how a tracking event counts: each event the tracker
writes is counted here, so the metrics and the tracking log never disagree.
Public: count_event(), observe_commit(), count_dns_failure(), LOCK_WAIT_BUCKETS.
Limits: in `hubd serve` these live in prometheus-client's multiprocess mode (files in
<data_dir>/metrics/, hubd/metrics_dir.py), so the admin API sums every process's counts;
elsewhere (tests, tools) in this process's memory. What is a state rather than an event
(queue depth, shadows held) is read from the queue at scrape time: hubd/admin/metrics.py.
See also: README.md (Metrics).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from storage.writer import LOCK_WAIT_BOUNDS_US

RECEIVED = Counter("hubd_smtp_received", "Messages received over SMTP and committed.")
SUBMITTED = Counter("hubd_pickup_submitted", "Messages taken from the pickup or replay directory.")
DELIVERED = Counter(
    "hubd_delivery_delivered",
    "Recipients delivered: into a local Maildir (via=local) or to a next hop (via=relay).",
    ["via"],
)
DEFERRED = Counter("hubd_delivery_deferred", "Recipients deferred (a transient failure).")
FAILED = Counter("hubd_delivery_failed", "Recipients failed (permanent, or expired).")
DUPLICATES = Counter(
    "hubd_delivery_duplicates_dropped",
    "Recipients dropped as duplicates (already delivered at their final hop, or held).",
)
DSNS = Counter(
    "hubd_dsn_generated",
    "Delivery status notifications made, by kind (failure, delay, ...).",
    ["kind"],
)
DOUBLE_BOUNCES = Counter(
    "hubd_dsn_double_bounces_dropped", "Undeliverable notifications that could go nowhere."
)
RESUBMITTED = Counter(
    "hubd_shadow_resubmissions", "Messages resubmitted from a shadow after a peer died."
)
SHADOWED = Counter("hubd_shadow_created", "Recipients handed to a peer that holds a shadow.")
DISCARDED = Counter("hubd_shadow_discarded", "Shadows discarded (the peer delivered them).")
POISONED = Counter("hubd_queue_poisoned", "Messages held after crashes during their delivery.")
UNPROTECTED = Counter(
    "hubd_shadow_unprotected",
    "Messages accepted with no redundant copy (before_ack = prefer, no peer took it in time).",
)

COMMIT_SECONDS = Histogram(
    "hubd_storage_commit_seconds",
    "Time of one group commit, from holding the write lock to a committed (fsynced) batch.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
COMMIT_SIZE = Histogram(
    "hubd_storage_commit_operations",
    "Operations (intakes, outcomes, claims, ...) committed together in one group commit.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
LOCK_WAIT_BUCKETS = tuple(bound / 1e6 for bound in LOCK_WAIT_BOUNDS_US)
LOCK_WAIT = Histogram(
    "hubd_storage_lock_wait_seconds",
    "Wait for write.lock before a group commit (the writers of a node's processes take turns).",
    buckets=LOCK_WAIT_BUCKETS,
)
DNS_FAILURES = Counter(
    "hubd_dns_failures",
    "DNS lookups that failed, by kind (nxdomain, servfail, timeout, error) and record type.",
    ["kind", "rdtype"],
)

_PER_MESSAGE = {
    "RECEIVE": RECEIVED,
    "SUBMIT": SUBMITTED,
    "RESUBMIT": RESUBMITTED,
    "DISCARD": DISCARDED,
    "POISON": POISONED,
    "DOUBLE_BOUNCE": DOUBLE_BOUNCES,
    "UNPROTECTED": UNPROTECTED,
}
_PER_RECIPIENT = {
    "DEFER": DEFERRED,
    "FAIL": FAILED,
    "DUPLICATE": DUPLICATES,
    "SHADOW": SHADOWED,
}


def count_event(event: str, recipients: int, reply: str | None) -> None:
    """Count one tracking event (a TrackingEvent, by name): per message, or per recipient
    it names."""
    if event in _PER_MESSAGE:
        _PER_MESSAGE[event].inc()
    elif event in _PER_RECIPIENT:
        _PER_RECIPIENT[event].inc(recipients)
    elif event == "DELIVER":
        DELIVERED.labels(via="local").inc(recipients)
    elif event == "SEND":
        DELIVERED.labels(via="relay").inc(recipients)
    elif event == "DSN":
        DSNS.labels(kind=reply or "unknown").inc()


def observe_commit(operations: int, seconds: float, lock_wait_seconds: float) -> None:
    """One group commit of `operations`, which took `seconds` once it held the lock."""
    COMMIT_SIZE.observe(operations)
    COMMIT_SECONDS.observe(seconds)
    LOCK_WAIT.observe(lock_wait_seconds)


def count_dns_failure(kind: str, rdtype: str) -> None:
    DNS_FAILURES.labels(kind=kind, rdtype=rdtype).inc()
