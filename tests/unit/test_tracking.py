"""The tracking log's files: one line per write, rotation by day and size, deletion by age."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from hubd.tracking import Tracker, TrackingEvent
from hubd.tracking_files import (
    LogFile,
    append_index,
    expired,
    log_files,
    log_name,
    parse_log_name,
    read_events,
)

DAY = date(2026, 11, 25)


class Clock:
    def __init__(self, when: datetime) -> None:
        self.now = when.timestamp()

    def __call__(self) -> float:
        return self.now


def record(tracker: Tracker, queue_id: str) -> None:
    tracker.record(TrackingEvent.RECEIVE, queue_id=queue_id, sender="a@x.test", recipients=["b@y"])


class TestNames:
    @pytest.mark.parametrize(
        ("index", "name"),
        [(0, "2026-11-25.jsonl"), (1, "2026-11-25_001.jsonl"), (12, "2026-11-25_012.jsonl")],
    )
    def test_round_trip(self, index: int, name: str) -> None:
        """A day's first file is YYYY-MM-DD.jsonl; later ones are numbered, and parse back."""
        assert log_name(DAY, index) == name
        assert parse_log_name(name) == (DAY, index)

    @pytest.mark.parametrize(
        "name", ["2026-13-01.jsonl", "notes.txt", "2026-11-25.jsonl.gz", "2026-11-25_1.jsonl"]
    )
    def test_other_files_are_not_the_log(self, name: str) -> None:
        """Anything else in the directory is left alone."""
        assert parse_log_name(name) is None

    def test_names_sort_as_they_were_written(self) -> None:
        """Plain sorting of names (ls, cat *) gives the order of writing."""
        files = [log_name(DAY, i) for i in range(0, 12)] + [log_name(DAY + timedelta(days=1), 0)]
        assert sorted(files) == files

    def test_append_index(self, tmp_path: Path) -> None:
        """Writers append to a day's newest file, and move on when it is full."""
        files = [LogFile(DAY, 0, tmp_path / "a"), LogFile(DAY, 1, tmp_path / "b")]
        sizes = {tmp_path / "a": 500, tmp_path / "b": 90}
        assert append_index([], sizes.__getitem__, 100) == 0
        assert append_index(files, sizes.__getitem__, 100) == 1
        sizes[tmp_path / "b"] = 100
        assert append_index(files, sizes.__getitem__, 100) == 2
        assert append_index(files, sizes.__getitem__, 0) == 1, "0: no size limit"

    def test_expired(self, tmp_path: Path) -> None:
        """A day's files expire once the whole day is older than max_age; 0 keeps all."""
        files = [LogFile(DAY - timedelta(days=d), 0, tmp_path / str(d)) for d in range(5)]
        now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
        gone = expired(files, now, timedelta(days=2))
        # Day -2 ended at 2026-11-24T00:00, 36 h ago: kept; day -3 ended 60 h ago: gone.
        assert sorted(f.day for f in gone) == [DAY - timedelta(days=4), DAY - timedelta(days=3)]
        assert expired(files, now, timedelta(0)) == []


class TestTracker:
    def test_one_json_line_per_event(self, tmp_path: Path) -> None:
        """Each event is one line in the UTC day's file, with its fields."""
        clock = Clock(datetime(2026, 11, 25, 9, 30, tzinfo=UTC))
        tracker = Tracker(tmp_path, "hub-1", clock)
        record(tracker, "Q1")
        tracker.record(
            TrackingEvent.SEND, queue_id="Q1", sender="", recipients=[], reply="250 ok", hop=1
        )
        tracker.close()
        lines = (tmp_path / "2026-11-25.jsonl").read_text().splitlines()
        assert len(lines) == 2
        first, second = (json.loads(line) for line in lines)
        assert first["time"] == "2026-11-25T09:30:00.000Z"
        assert (first["node"], first["event"], first["queue_id"]) == ("hub-1", "RECEIVE", "Q1")
        assert (second["reply"], second["hop"]) == ("250 ok", 1)

    def test_rotates_by_day(self, tmp_path: Path) -> None:
        """At UTC midnight the writer moves on to the new day's file."""
        clock = Clock(datetime(2026, 11, 25, 23, 59, 59, tzinfo=UTC))
        tracker = Tracker(tmp_path, "n", clock)
        record(tracker, "Q1")
        clock.now += 2
        record(tracker, "Q2")
        tracker.close()
        assert [f.path.name for f in log_files(tmp_path)] == [
            "2026-11-25.jsonl",
            "2026-11-26.jsonl",
        ]
        assert [e["queue_id"] for e in read_events(tmp_path)] == ["Q1", "Q2"]

    def test_rotates_by_size_and_two_writers_agree(self, tmp_path: Path) -> None:
        """Two writers (two processes of a node) share a file and move on to the same next one."""
        clock = Clock(datetime(2026, 11, 25, 9, tzinfo=UTC))
        one = Tracker(tmp_path, "n", clock, max_file_size=1000)
        two = Tracker(tmp_path, "n", clock, max_file_size=1000)
        for i in range(40):
            record(one if i % 2 else two, f"Q{i:02d}")
        one.close()
        two.close()
        files = log_files(tmp_path)
        assert len(files) > 3
        assert [f.index for f in files] == list(range(len(files))), "no file skipped or forked"
        for f in files[:-1]:
            # Each writer notices a full file at its next write: at most one line over each.
            assert 1000 <= f.path.stat().st_size < 1000 + 2 * 200
        events = list(read_events(tmp_path))
        assert sorted(e["queue_id"] for e in events) == [f"Q{i:02d}" for i in range(40)]
        assert all(line.startswith("{") for f in files for line in f.path.read_text().splitlines())

    def test_deletes_days_past_max_age(self, tmp_path: Path) -> None:
        """Opening a day's file deletes the days older than max_age, and nothing else."""
        for name in ("2026-11-01.jsonl", "2026-11-01_001.jsonl", "2026-11-20.jsonl", "keep.txt"):
            (tmp_path / name).write_text("{}\n")
        clock = Clock(datetime(2026, 11, 25, 9, tzinfo=UTC))
        tracker = Tracker(tmp_path, "n", clock, max_age=timedelta(days=7))
        record(tracker, "Q1")
        tracker.close()
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            "2026-11-20.jsonl",
            "2026-11-25.jsonl",
            "keep.txt",
        ]

    def test_undecodable_text_still_one_line(self, tmp_path: Path) -> None:
        """A field with undecodable bytes (surrogate escapes) is written escaped, not dropped."""
        tracker = Tracker(tmp_path, "n", Clock(datetime(2026, 11, 25, tzinfo=UTC)))
        tracker.record(
            TrackingEvent.SUBMIT, queue_id="Q", sender="a@x", recipients=[], file="m\udcff.eml"
        )
        tracker.close()
        (event,) = read_events(tmp_path)
        assert event["file"] == "m\udcff.eml"

    def test_write_failure_is_counted_not_raised(self, tmp_path: Path) -> None:
        """A log that cannot be written never stops mail: the event is counted as lost."""
        blocked = tmp_path / "tracking"
        tracker = Tracker(blocked, "n", Clock(datetime(2026, 11, 25, tzinfo=UTC)))
        blocked.rmdir()
        blocked.write_text("a file where the directory was")
        record(tracker, "Q1")
        assert tracker.failures == 1

    def test_torn_last_line_is_skipped(self, tmp_path: Path) -> None:
        """Reading skips a line cut short by a crash and goes on with the next file."""
        (tmp_path / "2026-11-24.jsonl").write_text('{"queue_id": "A"}\n{"queue_id": "B", "ev')
        (tmp_path / "2026-11-25.jsonl").write_text('{"queue_id": "C"}\n')
        assert [e["queue_id"] for e in read_events(tmp_path)] == ["A", "C"]
        assert [e["queue_id"] for e in read_events(tmp_path, first=DAY)] == ["C"]
