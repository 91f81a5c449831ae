"""The counters smtp-source and smtp-sink print with -c, parsed and followed."""

from __future__ import annotations

import os

import pytest

from hubd.bench.counter import SINK_COUNT, SOURCE_COUNT, CounterReader, last_count


class TestLastCount:
    @pytest.mark.parametrize(
        ("buffer", "pattern", "expected"),
        [
            (b"1\r2\r3\r", SOURCE_COUNT, (3, b"")),
            (b"1\r2\r3\r\n", SOURCE_COUNT, (3, b"")),
            (b"1\r2\r3", SOURCE_COUNT, (2, b"3")),
            (b"", SOURCE_COUNT, (None, b"")),
            (b"sess=2 quit=2 mesg=1\rsess=2 quit=2 mesg=2\r", SINK_COUNT, (2, b"")),
            (b"sess=3 quit=3 mesg=2\rsess=3 quit=3 me", SINK_COUNT, (2, b"sess=3 quit=3 me")),
            (b"sess=1 quit=1\r", SINK_COUNT, (None, b"")),
        ],
        ids=[
            "source",
            "source-final-newline",
            "source-partial",
            "nothing",
            "sink",
            "sink-partial",
            "sink-no-mesg",
        ],
    )
    def test_latest_complete_update(
        self, buffer: bytes, pattern: object, expected: tuple[int | None, bytes]
    ) -> None:
        """Only complete updates count; an incomplete one is kept for the next read."""
        assert last_count(buffer, pattern) == expected  # type: ignore[arg-type]


class TestCounterReader:
    def test_follows_a_pipe(self) -> None:
        """Counts written to a pipe are followed; wait_for returns when one is reached."""
        read_end, write_end = os.pipe()
        seen: list[int] = []
        with os.fdopen(read_end, "rb", buffering=0) as stream:
            reader = CounterReader(stream, SOURCE_COUNT, seen.append)
            os.write(write_end, b"1\r2\r")
            first = reader.wait_for(2, timeout=10)
            os.write(write_end, b"3\r4\r\n")
            os.close(write_end)
            reader.join()
            assert reader.value == 4
            assert seen[-1] == 4
            assert reader.reached_at(2) == first
            assert reader.reached_at(5) is None

    def test_times_out_with_the_count_reached(self) -> None:
        """A count that is not reached in time is a TimeoutError saying how far it got."""
        read_end, write_end = os.pipe()
        with os.fdopen(read_end, "rb", buffering=0) as stream:
            reader = CounterReader(stream, SOURCE_COUNT)
            os.write(write_end, b"1\r")
            os.close(write_end)
            reader.join()
            with pytest.raises(TimeoutError, match="reached 1 of 3"):
                reader.wait_for(3, timeout=0)

    def test_alive_check_stops_the_wait(self) -> None:
        """An exception from the liveness check ends the wait at once."""
        read_end, write_end = os.pipe()
        with os.fdopen(read_end, "rb", buffering=0) as stream:
            reader = CounterReader(stream, SOURCE_COUNT)

            def dead() -> None:
                raise RuntimeError("the MTA exited")

            with pytest.raises(RuntimeError, match="exited"):
                reader.wait_for(1, timeout=10, alive=dead)
            os.close(write_end)
            reader.join()
