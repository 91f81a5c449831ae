"""The arithmetic of `hubd bench --compare-postfix`: rates, CPU per message, medians, ratios."""

from __future__ import annotations

import json

import pytest

from hubd.bench.comparison import (
    CompareReport,
    Mta,
    RunFigures,
    compare_runs,
    format_comparison,
    median,
    per_message_ms,
    ratio,
)
from hubd.bench.usage import ProcessPeak


def _run(mta: Mta, round_: int, inbound: float, cpu: float, **extra: object) -> RunFigures:
    fields: dict[str, object] = {
        "mta": mta,
        "sessions": 10,
        "round": round_,
        "count": 3000,
        "inbound_seconds": inbound,
        "end_to_end_seconds": inbound * 1.5,
        "cpu_seconds": cpu,
        "peak_rss_kib": 100 * 1024,
        "peak_pss_kib": 50 * 1024,
        "processes": {"smtpd": ProcessPeak(4, 9 * 1024)},
        "received": 3000,
        "expected": 3000,
        **extra,
    }
    return RunFigures(**fields)  # type: ignore[arg-type]


class TestArithmetic:
    @pytest.mark.parametrize(
        ("values", "expected"),
        [([3.0], 3.0), ([5.0, 1.0, 3.0], 3.0), ([4.0, 1.0, 3.0, 2.0], 2.5), ([2.0, 2.0], 2.0)],
        ids=["one", "odd-unsorted", "even-mean-of-middle", "ties"],
    )
    def test_median(self, values: list[float], expected: float) -> None:
        """The median is the middle value, or the mean of the middle two."""
        assert median(values) == expected

    def test_median_of_nothing(self) -> None:
        """A median of no values is an error, not a zero."""
        with pytest.raises(ValueError, match="no values"):
            median([])

    @pytest.mark.parametrize(
        ("numerator", "denominator", "expected"),
        [
            (150.0, 600.0, 0.25),
            (6.0, 2.0, 3.0),
            (None, 2.0, None),
            (1.0, None, None),
            (1.0, 0.0, None),
        ],
        ids=["slower", "costlier", "no-numerator", "no-denominator", "zero"],
    )
    def test_ratio(
        self, numerator: float | None, denominator: float | None, expected: float | None
    ) -> None:
        """A ratio needs both figures and a denominator other than zero."""
        assert ratio(numerator, denominator) == expected

    def test_cpu_per_message(self) -> None:
        """6 CPU seconds over 3000 messages is 2 ms per message."""
        assert per_message_ms(6.0, 3000) == pytest.approx(2.0)
        with pytest.raises(ValueError, match="no messages"):
            per_message_ms(1.0, 0)

    def test_run_rates(self) -> None:
        """A run's rates are its count over its seconds; CPU per message over its count."""
        run = _run(Mta.HUBD, 1, inbound=20.0, cpu=15.0)
        assert run.inbound_per_second == pytest.approx(150.0)
        assert run.end_to_end_per_second == pytest.approx(100.0)
        assert run.cpu_ms_per_message == pytest.approx(5.0)
        assert run.cores_busy == pytest.approx(0.5)  # 15 CPU s over 30 s end to end
        assert run.peak_rss_mib == pytest.approx(100.0)


def _comparison_runs() -> list[RunFigures]:
    return [
        _run(Mta.POSTFIX, 1, inbound=5.0, cpu=6.0, latency_p99_ms=40.0),
        _run(Mta.HUBD, 1, inbound=20.0, cpu=15.0, latency_p99_ms=60.0),
        _run(Mta.HUBD, 2, inbound=30.0, cpu=18.0, latency_p99_ms=80.0),
        _run(Mta.POSTFIX, 2, inbound=6.0, cpu=6.6, latency_p99_ms=30.0),
        _run(Mta.POSTFIX, 3, inbound=4.0, cpu=9.0, latency_p99_ms=50.0),
        _run(Mta.HUBD, 3, inbound=25.0, cpu=12.0, latency_p99_ms=70.0),
    ]


class TestCompareRuns:
    def test_medians_and_ratios(self) -> None:
        """Each side's figure is the median of its rounds; the ratio is hubd's over Postfix's."""
        comparison = compare_runs(10, _comparison_runs())
        postfix, hubd = comparison.postfix.medians, comparison.hubd.medians
        assert postfix["inbound_per_second"] == pytest.approx(600.0)  # 3000 / 5 s
        assert hubd["inbound_per_second"] == pytest.approx(120.0)  # 3000 / 25 s
        assert comparison.ratios["inbound_per_second"] == pytest.approx(0.2)
        assert postfix["cpu_ms_per_message"] == pytest.approx(2.2)  # 6.6 s / 3000
        assert hubd["cpu_ms_per_message"] == pytest.approx(5.0)  # 15 s / 3000
        assert comparison.ratios["cpu_ms_per_message"] == pytest.approx(5.0 / 2.2)
        assert comparison.ratios["latency_p99_ms"] == pytest.approx(70.0 / 40.0)
        assert comparison.postfix.ranges["inbound_per_second"] == pytest.approx((500.0, 750.0))

    def test_figures_not_measured_stay_missing(self) -> None:
        """Without a latency pass the latency medians and ratio are None, not zero."""
        runs = [_run(Mta.POSTFIX, 1, 5.0, 6.0), _run(Mta.HUBD, 1, 20.0, 15.0)]
        comparison = compare_runs(10, runs)
        assert comparison.hubd.medians["latency_p50_ms"] is None
        assert comparison.ratios["latency_p50_ms"] is None

    def test_needs_both_mtas(self) -> None:
        """A session count with runs of one MTA only cannot be compared."""
        with pytest.raises(ValueError, match="both"):
            compare_runs(10, [_run(Mta.POSTFIX, 1, 5.0, 6.0)])


def _report(runs: list[RunFigures]) -> CompareReport:
    return CompareReport(
        count=3000,
        size=4096,
        rounds=3,
        postfix_version="3.7.11",
        hubd_version="0.1.0",
        directory="/var/tmp",
        filesystem="ext4",
        cpus=2,
        load_before=(1.0, 0.5, 0.25),
        load_after=(2.0, 1.0, 0.5),
        conditions=("durability: both fsync",),
        comparisons=(compare_runs(10, runs),),
    )


class TestReport:
    def test_table(self) -> None:
        """The table names both MTAs, each figure's median and range, and the ratio."""
        text = format_comparison(_report(_comparison_runs()))
        assert "Postfix 3.7.11" in text
        assert "hubd 0.1.0" in text
        assert "load average 1.00 0.50 0.25 before" in text
        line = next(x for x in text.splitlines() if x.startswith("inbound msgs/s"))
        assert line.split()[-5:] == ["600", "(500-750)", "120", "(100-150)", "0.20"]
        assert "smtpd (4) 9.0" in text
        assert "received 9,000 of 9,000" in text
        assert "NOT EVERY MESSAGE" not in text

    def test_a_lost_or_doubled_message_is_flagged(self) -> None:
        """A run whose sink did not get each message exactly once is called out."""
        runs = _comparison_runs()
        runs[1] = _run(Mta.HUBD, 1, 20.0, 15.0, received=2999)
        report = _report(runs)
        assert not report.every_message_once()
        assert "NOT EVERY MESSAGE EXACTLY ONCE" in format_comparison(report)
        runs[1] = _run(Mta.HUBD, 1, 20.0, 15.0, distinct=2998)
        assert not _report(runs).every_message_once()

    def test_json_shape(self) -> None:
        """as_dict() is JSON, with medians, ratios and every run of each side."""
        data = json.loads(json.dumps(_report(_comparison_runs()).as_dict()))
        assert data["mode"] == "compare-postfix"
        assert data["sessions"] == [10]
        (comparison,) = data["comparisons"]
        assert set(comparison) == {"sessions", "postfix", "hubd", "ratios", "runs"}
        assert comparison["hubd"]["medians"]["inbound_per_second"] == pytest.approx(120.0)
        assert len(comparison["runs"]) == 6
        run = comparison["runs"][0]
        assert run["processes"] == {"smtpd": {"count": 4, "peak_rss_kib": 9 * 1024}}
        assert run["cpu_ms_per_message"] == pytest.approx(2.0)
