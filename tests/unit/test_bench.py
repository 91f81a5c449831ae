"""The pure parts of `hubd bench`: percentiles, test messages, settings and the report."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from hubd.bench import (
    MIN_SIZE,
    BenchMode,
    BenchSettings,
    LoadResult,
    build_message,
    dot_stuff,
    format_report,
    percentile,
    summarise,
)
from hubd.config import HostPort


class TestPercentile:
    @pytest.mark.parametrize(
        ("values", "q", "expected"),
        [
            ([5.0], 50, 5.0),
            ([5.0], 99, 5.0),
            ([1.0, 2.0, 3.0], 0, 1.0),
            ([1.0, 2.0, 3.0], 50, 2.0),
            ([1.0, 2.0, 3.0], 100, 3.0),
            ([3.0, 1.0, 2.0, 4.0], 50, 2.5),
            ([float(v) for v in range(1, 101)], 99, 99.01),
            ([float(v) for v in range(1, 101)], 50, 50.5),
            ([1.0, 1.0, 1.0, 100.0], 99, 97.03),
        ],
        ids=[
            "one-value-p50",
            "one-value-p99",
            "p0-is-min",
            "odd-median",
            "p100-is-max",
            "unsorted-even-median",
            "hundred-p99",
            "hundred-p50",
            "outlier-p99",
        ],
    )
    def test_interpolates_between_ranks(
        self, values: list[float], q: float, expected: float
    ) -> None:
        """Percentiles interpolate linearly between the closest ranks, like numpy's default."""
        assert percentile(values, q) == pytest.approx(expected)

    @pytest.mark.parametrize(
        ("values", "q"),
        [([], 50), ([1.0], -1), ([1.0], 101)],
        ids=["empty", "below-0", "above-100"],
    )
    def test_rejects_nonsense(self, values: list[float], q: float) -> None:
        """No values, or a percentile outside 0-100, is a ValueError."""
        with pytest.raises(ValueError, match="percentile"):
            percentile(values, q)


class TestBuildMessage:
    @pytest.mark.parametrize("size", [*range(MIN_SIZE, MIN_SIZE + 170), 4096, 100_000])
    def test_exact_size_and_crlf(self, size: int) -> None:
        """A message has exactly the asked size, CRLF line ends only, and ends in CRLF."""
        data = build_message(123_456_789, size)
        assert len(data) == size
        assert data.endswith(b"\r\n")
        assert b"\r\n" * 2 in data
        assert data.replace(b"\r\n", b"").count(b"\n") == 0
        assert data.replace(b"\r\n", b"").count(b"\r") == 0
        assert all(len(line) <= 78 for line in data.split(b"\r\n"))

    def test_unique_message_ids(self) -> None:
        """Each serial gets its own Message-ID."""
        assert b"<1.bench@hubd.test>" in build_message(1, 4096)
        assert b"<2.bench@hubd.test>" in build_message(2, 4096)


class TestDotStuff:
    @pytest.mark.parametrize(
        ("data", "expected"),
        [
            (b"a\r\n", b"a\r\n.\r\n"),
            (b".a\r\n", b"..a\r\n.\r\n"),
            (b"a\r\n.\r\nb\r\n", b"a\r\n..\r\nb\r\n.\r\n"),
            (b"a.b\r\n", b"a.b\r\n.\r\n"),
        ],
        ids=["plain", "leading-dot", "lone-dot-line", "inner-dot"],
    )
    def test_doubles_leading_dots_and_terminates(self, data: bytes, expected: bytes) -> None:
        """Lines that start with a dot get a second one; CRLF.CRLF ends the transfer."""
        assert dot_stuff(data) == expected


class TestSettings:
    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"count": 0}, "count"),
            ({"concurrency": 0}, "concurrency"),
            ({"size": MIN_SIZE - 1}, "size"),
            ({"mode": BenchMode.SERVER}, "server"),
            ({"server": HostPort(host="127.0.0.1", port=25)}, "server"),
        ],
        ids=["no-messages", "no-sessions", "too-small", "server-mode-without-address", "stray"],
    )
    def test_rejects_bad_settings(self, kwargs: dict[str, object], match: str) -> None:
        """Impossible settings fail at construction with a message naming the option."""
        with pytest.raises(ValueError, match=match):
            BenchSettings(**kwargs)  # type: ignore[arg-type]

    def test_defaults(self) -> None:
        """The defaults are 2000 messages of 4096 bytes over 10 sessions to a fresh node."""
        settings = BenchSettings()
        assert (settings.count, settings.size, settings.concurrency) == (2000, 4096, 10)
        assert settings.mode is BenchMode.NODE


def _load(latencies: list[float], refusals: dict[str, int] | None = None) -> LoadResult:
    return LoadResult(
        latencies=latencies, refusals=Counter(refusals or {}), started_at=1000.0, seconds=2.0
    )


class TestSummarise:
    def test_node_run(self) -> None:
        """A node run reports rates, percentiles in ms, delivery time and messages per commit."""
        settings = BenchSettings(count=4, concurrency=2)
        report = summarise(
            settings,
            "127.0.0.9:2525",
            _load([0.001, 0.002, 0.003, 0.004]),
            delivered_at=1004.0,
            delivered=4,
            counters={"commits:enqueue": 2, "ops:enqueue": 4, "commits:claim": 9},
        )
        assert report.accepted == 4
        assert report.refused == 0
        assert report.accepted_per_second == pytest.approx(2.0)
        assert report.latency_p50_ms == pytest.approx(2.5)
        assert report.latency_p99_ms == pytest.approx(3.97)
        assert report.delivery_seconds == pytest.approx(4.0)
        assert report.delivered_per_second == pytest.approx(1.0)
        assert report.commits == 2
        assert report.enqueued == 4
        assert report.commits_per_second == pytest.approx(1.0)
        assert report.messages_per_commit == pytest.approx(2.0)

    def test_server_run_has_no_delivery_or_commits(self) -> None:
        """Against --server, delivery and commit figures are absent, not zero."""
        settings = BenchSettings(
            count=3, mode=BenchMode.SERVER, server=HostPort(host="127.0.0.1", port=25)
        )
        report = summarise(settings, "127.0.0.1:25", _load([0.01], {"451 4.3.0 Local error": 2}))
        assert report.accepted == 1
        assert report.refused == 2
        assert report.delivered is None
        assert report.delivery_seconds is None
        assert report.commits is None
        assert report.messages_per_commit is None

    def test_nothing_accepted(self) -> None:
        """With every message refused there are no percentiles to report."""
        report = summarise(BenchSettings(count=1), "x:1", _load([], {"421 4.7.0 busy": 1}))
        assert report.latency_p50_ms is None
        assert report.latency_p99_ms is None


class TestFormatReport:
    def test_node_report_lines(self) -> None:
        """The terminal report names each figure once, with its unit."""
        report = summarise(
            BenchSettings(count=4, concurrency=2),
            "127.0.0.9:2525",
            _load([0.001, 0.002, 0.003, 0.004], {"451 4.3.0 Local error": 1}),
            delivered_at=1004.0,
            delivered=4,
            counters={"commits:enqueue": 2, "ops:enqueue": 4},
        )
        text = format_report(report)
        assert text.splitlines()[0] == (
            "hubd bench: 4 messages of 4096 bytes over 2 sessions to 127.0.0.9:2525 (node)"
        )
        assert "accepted            4/4 in 2.00 s = 2.0 msg/s" in text
        assert "end of DATA to 250  p50 2.50 ms, p99 3.97 ms" in text
        assert "refused             1 x 451 4.3.0 Local error" in text
        assert "delivered           4 within 4.00 s of the start = 1.0 msg/s" in text
        assert "1.0 commits/s vs 2.0 msg/s = 2.00 messages per commit" in text

    def test_ceiling_report_omits_what_was_not_measured(self) -> None:
        """A ceiling run prints no delivery or group-commit lines."""
        report = summarise(BenchSettings(mode=BenchMode.CEILING), "x:1", _load([0.001]))
        text = format_report(report)
        assert "(ceiling)" in text
        assert "delivered" not in text
        assert "group commit" not in text

    def test_json_form(self) -> None:
        """as_dict() is JSON-serialisable and keeps every field."""
        report = summarise(BenchSettings(count=1), "x:1", _load([0.001]))
        data = json.loads(json.dumps(report.as_dict()))
        assert data["mode"] == "node"
        assert data["accepted"] == 1
        assert data["refusals"] == {}
        assert data["delivered"] is None
        assert set(data) >= {"latency_p50_ms", "latency_p99_ms", "messages_per_commit"}
