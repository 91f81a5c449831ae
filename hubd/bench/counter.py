"""The running counters that Postfix's smtp-source and smtp-sink print with -c.

Owns: reading a child's stdout in a thread, parsing each update ("12\r" from smtp-source,
"sess=3 quit=3 mesg=12\r" from smtp-sink), and waiting until the count reaches a target.
Public: CounterReader, last_count(), SOURCE_COUNT, SINK_COUNT.
Failures: wait_for() raises TimeoutError; an exception from `alive` passes through.
Limits: the time a target is reached is when the update was read, a few ms after it was
written at most; updates are written per message, so none is missed.
See also: hubd/bench/smtp_source.py, hubd/bench/smtp_sink.py, smtp-source(1), smtp-sink(1).
"""

from __future__ import annotations

import bisect
import os
import re
import threading
import time
from collections.abc import Callable
from typing import IO

SOURCE_COUNT = re.compile(rb"^(\d+)$")
SINK_COUNT = re.compile(rb"\bmesg=(\d+)\b")
_UPDATE_END = re.compile(rb"[\r\n]")

Listener = Callable[[int], None]


def last_count(buffer: bytes, pattern: re.Pattern[bytes]) -> tuple[int | None, bytes]:
    """The latest count among the complete updates in `buffer`, and the incomplete rest."""
    *complete, rest = _UPDATE_END.split(buffer)
    for update in reversed(complete):
        match = pattern.search(update)
        if match:
            return int(match[1]), rest
    return None, rest


class CounterReader:
    """Follows the counter a child prints on `stream`, until the stream ends."""

    def __init__(
        self, stream: IO[bytes], pattern: re.Pattern[bytes], listener: Listener | None = None
    ) -> None:
        self.value = 0
        self._stream = stream
        self._pattern = pattern
        self._listener = listener
        self._changed = threading.Condition()
        self._history: list[tuple[int, float]] = []  # (count, when it was read), rising
        self._thread = threading.Thread(target=self._read, name="bench-counter", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        rest = b""
        while chunk := os.read(self._stream.fileno(), 65536):
            count, rest = last_count(rest + chunk, self._pattern)
            if count is None:
                continue
            with self._changed:
                self.value = count
                self._history.append((count, time.perf_counter()))
                self._changed.notify_all()
            listener = self._listener
            if listener is not None:
                listener(count)

    def follow(self, listener: Listener | None) -> None:
        """Call `listener` with each new count from now on (None: stop calling)."""
        self._listener = listener

    def reached_at(self, target: int) -> float | None:
        """The perf_counter() time the count first reached `target`, if it has."""
        with self._changed:
            if self.value < target:
                return None
            return self._history[self._first_at_least(target)][1]

    def _first_at_least(self, target: int) -> int:
        """The index of the first update at or past `target` (counts only rise)."""
        return bisect.bisect_left(self._history, target, key=lambda entry: entry[0])

    def wait_for(
        self, target: int, timeout: float, alive: Callable[[], object] = lambda: True
    ) -> float:
        """Block until the count reaches `target`; the perf_counter() time it did."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.value < target:
                alive()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"the count reached {self.value} of {target}")
                self._changed.wait(min(left, 0.5))
            return self._history[self._first_at_least(target)][1]

    def join(self, timeout: float = 5.0) -> None:
        """Wait until the stream has ended and every update was read."""
        self._thread.join(timeout)
