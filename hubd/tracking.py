"""The message tracking log: one JSON line per event in a message's life.

Owns: appending to `<data_dir>/tracking/` (file names, rotation by UTC day and by size, and
deleting days past their age: hubd/tracking_files.py).
Public: Tracker, TrackingEvent, read_events().
Failures: a write error is logged and counted, never raised into mail handling.
Limits: each record is one write() of one line on an O_APPEND descriptor, so the processes
of a node can share a file without interleaving lines (Linux serialises writes to one regular
file); lines are not fsynced: the queue database, not this log, is the record of truth, so
an event written just before a power loss may be missing (kill -9 loses none written).
A file renamed away by another tool keeps being written until hubd's own rotation moves on.
See also: DESIGN.md (the events), README.md (the fields), hubd/tracking_query.py (queries).
"""

from __future__ import annotations

import enum
import json
import logging
import os
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from hubd.metrics import count_event
from hubd.tracking_files import append_index, expired, log_files, log_name, read_events

__all__ = ["Tracker", "TrackingEvent", "read_events"]

log = logging.getLogger(__name__)

_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC


class TrackingEvent(enum.StrEnum):
    RECEIVE = "RECEIVE"
    SUBMIT = "SUBMIT"
    SEND = "SEND"
    DELIVER = "DELIVER"
    DEFER = "DEFER"
    FAIL = "FAIL"
    DSN = "DSN"
    RESUBMIT = "RESUBMIT"
    SHADOW = "SHADOW"
    DISCARD = "DISCARD"
    DUPLICATE = "DUPLICATE"
    UNPROTECTED = "UNPROTECTED"  # accepted with no redundant copy (before_ack = "prefer")
    POISON = "POISON"
    PRESSURE = "PRESSURE"  # a change of back-pressure level (queue_id empty)
    DOUBLE_BOUNCE = "DOUBLE_BOUNCE"  # mail from <> that failed and could go nowhere: dropped


class Tracker:
    """Appends tracking events for one node (one instance per process)."""

    def __init__(
        self,
        directory: Path,
        node: str,
        clock: Callable[[], float],
        *,
        max_file_size: int = 0,
        max_age: timedelta = timedelta(0),
    ) -> None:
        self._directory = directory
        self._node = node
        self._clock = clock
        self._max_file_size = max_file_size
        self._max_age = max_age
        self._day: date | None = None
        self._fd: int | None = None
        self._failing = False
        self.failures = 0
        directory.mkdir(parents=True, exist_ok=True)

    def record(
        self,
        event: TrackingEvent,
        *,
        queue_id: str,
        sender: str,
        recipients: Sequence[str],
        message_id: str | None = None,
        next_hop: str | None = None,
        reply: str | None = None,
        size: int | None = None,
        **extra: Any,
    ) -> None:
        """Write one event line (and count it in the node's metrics)."""
        count_event(event, len(recipients), reply)
        now = datetime.fromtimestamp(self._clock(), UTC)
        line = {
            "time": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "node": self._node,
            "event": str(event),
            "queue_id": queue_id,
            "message_id": message_id,
            "sender": sender,
            "recipients": list(recipients),
            "next_hop": next_hop,
            "reply": reply,
            "size": size,
            **extra,
        }
        try:
            _write_line(self._fd_for(now), _encode(line))
        except OSError as error:
            self.failures += 1
            if not self._failing:  # once per outage, not once per message
                log.error("cannot write the tracking log in %s: %s", self._directory, error)
            self._failing = True
            self.close()
        else:
            self._failing = False

    def _fd_for(self, now: datetime) -> int:
        day = now.date()
        if self._fd is not None and day == self._day and not self._full(self._fd):
            return self._fd
        self.close()
        self._directory.mkdir(parents=True, exist_ok=True)
        index = append_index(log_files(self._directory, day, day), _size, self._max_file_size)
        self._fd = os.open(self._directory / log_name(day, index), _OPEN_FLAGS, 0o640)
        self._day = day
        self._remove_expired(now)
        return self._fd

    def _full(self, fd: int) -> bool:
        return bool(self._max_file_size) and os.fstat(fd).st_size >= self._max_file_size

    def _remove_expired(self, now: datetime) -> None:
        for old in expired(log_files(self._directory), now, self._max_age):
            try:
                old.path.unlink()
            except FileNotFoundError:  # another process of the node removed it first
                continue
            log.info("removed tracking log %s (older than tracking.max_age)", old.path.name)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _encode(line: dict[str, Any]) -> bytes:
    try:
        return (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes (surrogate escapes) go in as \u escapes
        return (json.dumps(line) + "\n").encode("ascii")


def _write_line(fd: int, data: bytes) -> None:
    written = os.write(fd, data)
    if written < len(data):
        # A short write (a full disk) leaves a torn line; end it so the next record is whole.
        os.write(fd, b"\n")
        raise OSError(f"short write to the tracking log ({written} of {len(data)} bytes)")
