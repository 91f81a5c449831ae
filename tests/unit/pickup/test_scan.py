"""The rules of a pickup scan: which files are taken, under which queue id, how many a minute."""

from __future__ import annotations

import pytest

from hubd.pickup.scan import FileSeen, RateBudget, is_candidate, is_ready, queue_id_for
from hubd.queueid import queue_id_time

NOW = 1_800_000_000.0


def seen(**changes: object) -> FileSeen:
    fields: dict[str, object] = {
        "source": "pickup",
        "name": "m1.eml",
        "inode": 42,
        "size": 100,
        "mtime_ns": int((NOW - 5) * 1e9),
    }
    fields.update(changes)
    return FileSeen(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "taken"),
    [
        ("m1.eml", True),
        ("m1.eml.tmp", False),
        (".m1.eml", False),
        ("m1.bad", False),
        ("m1.reason", False),
        (".eml", False),
        ("M1.EML", False),
    ],
)
def test_candidates(name: str, taken: bool) -> None:
    """Only visible .eml files are taken; .tmp files are being written."""
    assert is_candidate(name) is taken


class TestReady:
    def test_settled_file(self) -> None:
        """A non-empty file unmodified for a scan interval is taken."""
        assert is_ready(seen(), NOW, settle=1.0)

    def test_empty_file_waits(self) -> None:
        """An empty file is probably being written: it waits."""
        assert not is_ready(seen(size=0), NOW, settle=1.0)

    def test_just_modified_waits(self) -> None:
        """A file modified less than an interval ago waits for the next scan."""
        assert not is_ready(seen(mtime_ns=int((NOW - 0.5) * 1e9)), NOW, settle=1.0)
        assert is_ready(seen(mtime_ns=int((NOW - 0.5) * 1e9)), NOW + 0.5, settle=1.0)

    def test_future_mtime_waits(self) -> None:
        """A modification time ahead of the clock waits until it has passed."""
        assert not is_ready(seen(mtime_ns=int((NOW + 60) * 1e9)), NOW, settle=1.0)


class TestQueueId:
    def test_same_file_same_id(self) -> None:
        """The same file gets the same queue id in every run (so a retake is recognised)."""
        assert queue_id_for(seen()) == queue_id_for(seen())

    @pytest.mark.parametrize(
        "change",
        [{"name": "m2.eml"}, {"inode": 43}, {"size": 101}, {"mtime_ns": 1}, {"source": "replay"}],
        ids=["name", "inode", "size", "mtime", "source"],
    )
    def test_another_file_another_id(self, change: dict[str, object]) -> None:
        """Any change to the file's identity gives another queue id."""
        assert queue_id_for(seen(**change)) != queue_id_for(seen())

    def test_id_is_a_queue_id_of_the_files_time(self) -> None:
        """It is an ordinary queue id, carrying the file's modification time."""
        stamp = queue_id_time(queue_id_for(seen()))
        assert stamp == pytest.approx(NOW - 5, abs=0.001)


class TestRate:
    def test_no_limit(self) -> None:
        """rate = 0 takes everything."""
        budget = RateBudget(0, NOW)
        assert all(budget.take(NOW) for _ in range(10_000))

    def test_per_minute(self) -> None:
        """At most `rate` files at once, then one more each 60/rate seconds."""
        budget = RateBudget(60, NOW)
        assert sum(budget.take(NOW) for _ in range(100)) == 60
        assert not budget.take(NOW + 0.5)
        assert budget.take(NOW + 1.0)
        assert not budget.take(NOW + 1.0)
        assert sum(budget.take(NOW + 3600) for _ in range(100)) == 60, "it never saves up more"
