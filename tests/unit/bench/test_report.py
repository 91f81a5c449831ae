"""The write-lock wait figure of the bench report, from the node's histogram."""

from __future__ import annotations

from hubd.bench.report import lock_wait_p99


class TestLockWait:
    def test_p99_bucket(self) -> None:
        """The 99th percentile falls in the first bucket holding 99% of the waits."""
        counters = {
            "lock_wait_us_le:100": 980,
            "lock_wait_us_le:5000": 15,
            "lock_wait_us_le:inf": 5,
        }
        assert lock_wait_p99(counters) == (5000, 1000)

    def test_past_the_last_bound(self) -> None:
        """When the top 1% waited longer than every bound, there is no bound to give."""
        assert lock_wait_p99({"lock_wait_us_le:100": 90, "lock_wait_us_le:inf": 10}) == (None, 100)

    def test_no_waits(self) -> None:
        """Counters without a histogram give no figure."""
        assert lock_wait_p99({"commits:enqueue": 3}) == (None, 0)
