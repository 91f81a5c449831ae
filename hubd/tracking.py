"""The message tracking log: one JSON line per event in a message's life.

Owns: writing `<data_dir>/tracking/YYYY-MM-DD.jsonl` (one file per UTC day) and reading it back.
Public: Tracker, TrackingEvent, read_events().
Failures: a write error is logged and counted, never raised into mail handling.
Limits: lines are flushed, not fsynced; the queue database, not this log, is the record of
truth, so an event written just before kill -9 may be missing.
See also: DESIGN.md (the events), README.md (the fields).
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)


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
    POISON = "POISON"
    DOUBLE_BOUNCE = "DOUBLE_BOUNCE"  # mail from <> that failed and could go nowhere: dropped


class Tracker:
    """Appends tracking events for one node."""

    def __init__(self, directory: Path, node: str, clock: Callable[[], float]) -> None:
        self._directory = directory
        self._node = node
        self._clock = clock
        self._day = ""
        self._file: IO[str] | None = None
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
        """Write one event line."""
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
            self._file_for(now).write(json.dumps(line, ensure_ascii=False) + "\n")
        except OSError:
            log.exception("cannot write the tracking log")

    def _file_for(self, now: datetime) -> IO[str]:
        day = now.strftime("%Y-%m-%d")
        if self._file is None or day != self._day:
            self.close()
            self._day = day
            path = self._directory / f"{day}.jsonl"
            self._file = path.open("a", encoding="utf-8", buffering=1)
        return self._file

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_events(directory: Path) -> Iterator[dict[str, Any]]:
    """Every event in a tracking directory, oldest file first; torn last lines are skipped."""
    for path in sorted(directory.glob("*.jsonl")):
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue
