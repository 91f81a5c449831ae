"""Queue ids: fixed width, sortable by time of receipt, random within a millisecond."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hubd.queueid import new_queue_id

ALPHABET = set("0123456789BCDFGHJKLMNPQRSTVWXZ")
T0 = 1_700_000_000.0


class TestNewQueueId:
    @pytest.mark.parametrize(
        "now",
        [0.0, T0, T0 + 0.0005, 2**47 / 1000, (2**48 - 1) / 1000],
        ids=["epoch", "2023", "sub-millisecond", "far-future", "last-millisecond"],
    )
    def test_shape(self, now: float) -> None:
        """Ids are 19 characters of digits and consonants (no vowels, no lower case)."""
        queue_id = new_queue_id(now, random.Random(1))
        assert len(queue_id) == 19
        assert set(queue_id) <= ALPHABET

    def test_deterministic(self) -> None:
        """The same time and the same random state give the same id (the test seam)."""
        assert new_queue_id(T0, random.Random(5)) == new_queue_id(T0, random.Random(5))

    def test_random_tail(self) -> None:
        """Ids made in the same millisecond differ by their random tail only."""
        rng = random.Random(5)
        ids = {new_queue_id(T0, rng) for _ in range(1000)}
        assert len(ids) == 1000
        assert len({queue_id[:10] for queue_id in ids}) == 1

    def test_extremes_of_the_random_tail(self) -> None:
        """The smallest and largest 40-bit tails both fit the 9-character field."""

        class Fixed(random.Random):
            def __init__(self, value: int) -> None:
                super().__init__(0)
                self.value = value

            def getrandbits(self, k: int, /) -> int:
                return self.value

        low = new_queue_id(T0, Fixed(0))
        high = new_queue_id(T0, Fixed(2**40 - 1))
        assert low[10:] == "000000000"
        assert low[:10] == high[:10]
        assert low < high

    @given(
        st.integers(0, 2**48 - 2),
        st.integers(1, 10**9),
        st.integers(0, 2**32),
        st.integers(0, 2**32),
    )
    def test_sorts_by_time(self, millis: int, gap: int, seed_a: int, seed_b: int) -> None:
        """An id made a millisecond or more later sorts after, whatever the random tails."""
        later = min(millis + gap, 2**48 - 1)
        # Mid-millisecond times, so that float rounding cannot move either id to a neighbour.
        first = new_queue_id((millis + 0.5) / 1000, random.Random(seed_a))
        second = new_queue_id((later + 0.5) / 1000, random.Random(seed_b))
        assert first < second
