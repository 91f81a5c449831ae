"""Node-wide client counters for a node of several acceptor processes, in shared memory.

Owns: SharedCounters, the NodeCounters that every acceptor of one node sees alike: sessions
open on the node, connections per client, and each client's (and submission user's) message
rate; and the shared file they live in (a memfd the supervisor makes and every acceptor
inherits).
Public: SharedCounters, counters_file().
Failures: ValueError for a region outside the file.
Limits: each acceptor writes only its own region of the file and reads every region, so
no lock is taken and a count is never torn (aligned 4-byte and 8-byte stores); an
acceptor that dies leaves its counts behind until the one that replaces it clears its
region at start-up. A client's counts are kept in a count-min sketch: two rows of cells
picked by a keyed hash (the key is the node's, so a client cannot choose addresses that
land on another's cells), and the smaller of its two cells is its count. A count is never
under-estimated; a client is counted high only when another client shares both of its
cells, which is then a refusal a little early, never one let past its limit. The message
rate is a sliding window over the current and the last whole minute (a burst of
`per_minute`, then about `per_minute` in any minute), not LocalCounters' token bucket.
Failed AUTHs count from a client's first failure until `window` has passed, per acceptor,
and the acceptors' counts add up. Times are whole seconds (32 bits, good until 2106).
See also: hubd/smtp/limits.py (the interface, LocalCounters), hubd/supervisor.py (makes
the file), hubd/worker.py (opens it).
"""

from __future__ import annotations

import hashlib
import mmap
import os

from hubd.smtp.limits import Occupancy

CELLS = 1 << 14  # per row; a node's clients are far fewer, so both cells collide rarely
_ROWS = 2
_WORD = 4
_HEADER = 16  # sessions (8 bytes), the minute the rate cells count (8 bytes)
_CONNECTIONS = _ROWS * CELLS * _WORD
_RATE = 2 * _ROWS * CELLS * _WORD  # this minute's cells, then the last minute's
_AUTH = _ROWS * CELLS * 2 * _WORD  # per cell: failed AUTHs, and when the first of them was
REGION = _HEADER + _CONNECTIONS + _RATE + _AUTH
_MINUTE = 60.0


def counters_file(regions: int) -> int:
    """A shared memory file (its fd, inheritable) with a zeroed region per acceptor."""
    fd = os.memfd_create("hubd-counters", 0)
    os.ftruncate(fd, regions * REGION)
    os.set_inheritable(fd, True)
    return fd


class SharedCounters:
    """NodeCounters over a counters_file(): this acceptor writes `region`, reads them all."""

    def __init__(self, fd: int, region: int, regions: int, key: bytes) -> None:
        if not 0 <= region < regions:
            raise ValueError(f"region {region} of {regions}")
        self._map = mmap.mmap(fd, regions * REGION)
        self._regions = regions
        self._key = key
        self._words = memoryview(self._map).cast("I")
        self._longs = memoryview(self._map).cast("q")
        self._mine = region
        start = region * REGION
        self._map[start : start + REGION] = bytes(REGION)  # what a dead predecessor left

    # -- NodeCounters --------------------------------------------------------------------

    def connect(self, client: str) -> Occupancy:
        cells = self._cells(client)
        sessions = self._long(self._mine, 0) + 1
        self._set_long(self._mine, 0, sessions)
        for row, cell in enumerate(cells):
            self._words[self._connection_word(self._mine, row, cell)] += 1
        total = sum(self._long(r, 0) for r in range(self._regions))
        from_client = min(
            sum(self._words[self._connection_word(r, row, cell)] for r in range(self._regions))
            for row, cell in enumerate(cells)
        )
        return Occupancy(total, from_client)

    def disconnect(self, client: str) -> None:
        cells = self._cells(client)
        indexes = [self._connection_word(self._mine, row, cell) for row, cell in enumerate(cells)]
        if any(self._words[i] == 0 for i in indexes):
            return  # not counted here (its acceptor was replaced since)
        for index in indexes:
            self._words[index] -= 1
        self._set_long(self._mine, 0, max(0, self._long(self._mine, 0) - 1))

    def take_message(self, client: str, now: float, per_minute: int) -> bool:
        minute = int(now // _MINUTE)
        self._turn_minute(minute)
        cells = self._cells(client)
        current = 0
        last = 0
        for region in range(self._regions):
            age = minute - self._long(region, 1)
            if age == 0:
                current_here = self._cell_min(region, cells, 0)
                last_here = self._cell_min(region, cells, 1)
            elif age == 1:  # that acceptor has taken nothing this minute yet
                current_here, last_here = 0, self._cell_min(region, cells, 0)
            else:
                continue
            current += current_here
            last += last_here
        # The last minute counts for the part of it still inside the sliding minute.
        weight = 1.0 - (now % _MINUTE) / _MINUTE
        if current + last * weight >= per_minute:
            return False
        for row, cell in enumerate(cells):
            self._words[self._rate_word(self._mine, 0, row, cell)] += 1
        return True

    def auth_failures(self, client: str, now: float, window: float) -> int:
        # As LocalCounters: a window opens at a client's first failure and counts until it
        # has passed; each acceptor's window is its own, and they add up.
        return min(
            sum(
                self._failures_in(region, row, cell, now, window) for region in range(self._regions)
            )
            for row, cell in enumerate(self._cells(client))
        )

    def auth_failed(self, client: str, now: float, window: float) -> int:
        for row, cell in enumerate(self._cells(client)):
            count, since = self._auth_words(self._mine, row, cell)
            if self._failures_in(self._mine, row, cell, now, window):
                self._words[count] += 1
            else:
                self._words[count] = 1
                self._words[since] = int(now)
        return self.auth_failures(client, now, window)

    # -- the layout ----------------------------------------------------------------------

    def _cells(self, client: str) -> tuple[int, int]:
        digest = hashlib.blake2b(client.encode(), digest_size=8, key=self._key).digest()
        return (
            int.from_bytes(digest[:4], "little") % CELLS,
            int.from_bytes(digest[4:], "little") % CELLS,
        )

    def _failures_in(self, region: int, row: int, cell: int, now: float, window: float) -> int:
        count, since = self._auth_words(region, row, cell)
        return self._words[count] if now - self._words[since] < window else 0

    @staticmethod
    def _auth_words(region: int, row: int, cell: int) -> tuple[int, int]:
        base = (region * REGION + _HEADER + _CONNECTIONS + _RATE) // _WORD
        count = base + (row * CELLS + cell) * 2
        return count, count + 1

    def _cell_min(self, region: int, cells: tuple[int, int], window: int) -> int:
        return min(
            self._words[self._rate_word(region, window, row, cell)]
            for row, cell in enumerate(cells)
        )

    def _turn_minute(self, minute: int) -> None:
        # Only this acceptor's own region moves on; readers age the others by their stamp.
        counted = self._long(self._mine, 1)
        if counted == minute:
            return
        start = self._mine * REGION + _HEADER + _CONNECTIONS
        half = _RATE // 2
        if counted == minute - 1:
            self._map[start + half : start + _RATE] = self._map[start : start + half]
        else:
            self._map[start + half : start + _RATE] = bytes(half)
        self._map[start : start + half] = bytes(half)
        self._set_long(self._mine, 1, minute)

    def _long(self, region: int, slot: int) -> int:
        return int(self._longs[region * REGION // 8 + slot])

    def _set_long(self, region: int, slot: int, value: int) -> None:
        self._longs[region * REGION // 8 + slot] = value

    @staticmethod
    def _connection_word(region: int, row: int, cell: int) -> int:
        return (region * REGION + _HEADER) // _WORD + row * CELLS + cell

    @staticmethod
    def _rate_word(region: int, window: int, row: int, cell: int) -> int:
        base = (region * REGION + _HEADER + _CONNECTIONS) // _WORD
        return base + (window * _ROWS + row) * CELLS + cell


__all__ = ["CELLS", "REGION", "SharedCounters", "counters_file"]
