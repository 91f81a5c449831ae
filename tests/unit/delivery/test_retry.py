"""The retry schedule and expiry of deferred recipients."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hubd.delivery.retry import EXPIRED, RetryPolicy, next_attempt

POLICY = RetryPolicy(intervals=[60, 300, 900], expiry=3600)
T0 = 1_700_000_000.0


class TestNextAttempt:
    @pytest.mark.parametrize(
        ("attempts", "elapsed", "expected"),
        [
            (1, 0, T0 + 60),
            (2, 60, T0 + 60 + 300),
            (3, 360, T0 + 360 + 900),
            (4, 1260, T0 + 1260 + 900),
            (40, 1260, T0 + 1260 + 900),
            (0, 0, T0 + 60),
            (-1, 0, T0 + 60),
            (3, 3000, T0 + 3600),
            (1, 3599, T0 + 3600),
            (1, 3600, EXPIRED),
            (1, 99999, EXPIRED),
        ],
        ids=[
            "first-failure",
            "second-failure",
            "third-failure",
            "last-interval-repeats",
            "many-failures",
            "zero-attempts-as-one",
            "negative-attempts-as-one",
            "capped-at-expiry",
            "last-second",
            "at-expiry",
            "long-past-expiry",
        ],
    )
    def test_schedule(self, attempts: int, elapsed: float, expected: float | str) -> None:
        """After n failures wait the n-th interval (the last repeats), never past the expiry."""
        assert next_attempt(POLICY, received_at=T0, attempts=attempts, now=T0 + elapsed) == expected

    def test_single_interval(self) -> None:
        """A one-interval policy retries at that interval every time."""
        policy = RetryPolicy(intervals=[1], expiry=3600)
        for attempts in range(1, 5):
            assert next_attempt(policy, received_at=T0, attempts=attempts, now=T0 + 10) == T0 + 11

    def test_needs_an_interval(self) -> None:
        """A policy with no intervals is refused when made."""
        with pytest.raises(ValueError, match="at least one interval"):
            RetryPolicy(intervals=[], expiry=60)

    @given(
        intervals=st.lists(st.floats(0.001, 1e6), min_size=1, max_size=8),
        expiry=st.floats(0, 1e7),
        attempts=st.integers(-2, 100),
        elapsed=st.floats(0, 2e7),
    )
    def test_bounds(
        self, intervals: list[float], expiry: float, attempts: int, elapsed: float
    ) -> None:
        """The next attempt lies after now and no later than the deadline, or it is EXPIRED."""
        policy = RetryPolicy(intervals=intervals, expiry=expiry)
        now = T0 + elapsed
        when = next_attempt(policy, received_at=T0, attempts=attempts, now=now)
        if now >= T0 + expiry:
            assert when == EXPIRED
        else:
            assert when != EXPIRED
            assert now < when <= T0 + expiry

    @given(
        intervals=st.lists(st.integers(1, 10_000), min_size=1, max_size=8).map(sorted),
        attempts=st.integers(1, 20),
    )
    def test_non_decreasing_for_growing_intervals(
        self, intervals: list[int], attempts: int
    ) -> None:
        """With growing intervals, more failures never bring the next attempt closer."""
        policy = RetryPolicy(intervals=intervals, expiry=10**9)
        first = next_attempt(policy, received_at=T0, attempts=attempts, now=T0)
        later = next_attempt(policy, received_at=T0, attempts=attempts + 1, now=T0)
        assert isinstance(first, float)
        assert isinstance(later, float)
        assert first <= later
