"""Tracking log files: their names, the one to append to, the expired ones, and reading them.

Owns: the layout of `<data_dir>/tracking/`: `YYYY-MM-DD.jsonl` (UTC day), then
`YYYY-MM-DD_001.jsonl`, `_002` ... once a day's file passes `tracking.max_file_size`; which
file a writer appends to; which days are past `tracking.max_age`; streaming lines back.
Public: LogFile, log_name(), parse_log_name(), log_files(), append_index(), expired(),
read_events().
Failures: reading skips lines that are not JSON objects (a torn last line after kill -9).
Limits: a file is read one line at a time, never whole; the day in a name is the day of
every record in it, so a time window skips whole files.
See also: hubd/tracking.py (the writer), hubd/tracking_query.py (filters and counts).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:_(\d{3,9}))?\.jsonl$")


@dataclass(frozen=True, slots=True, order=True)
class LogFile:
    """One file of the log: its day, its place in the day, its path."""

    day: date
    index: int
    path: Path = field(compare=False)


def log_name(day: date, index: int) -> str:
    """The file name of a day's `index`th file (0: the day's first, unnumbered)."""
    return f"{day.isoformat()}.jsonl" if index == 0 else f"{day.isoformat()}_{index:03d}.jsonl"


def parse_log_name(name: str) -> tuple[date, int] | None:
    """The day and index a file name stands for, or None for any other file."""
    match = _NAME.match(name)
    if match is None:
        return None
    try:
        day = date.fromisoformat(match[1])
    except ValueError:
        return None
    return day, int(match[2] or 0)


def log_files(
    directory: Path, first: date | None = None, last: date | None = None
) -> list[LogFile]:
    """The log's files, oldest first, of the days from `first` to `last` (both included)."""
    try:
        names = [entry.name for entry in directory.iterdir()]
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        parsed = parse_log_name(name)
        if parsed is None:
            continue
        day, index = parsed
        if (first is None or day >= first) and (last is None or day <= last):
            found.append(LogFile(day, index, directory / name))
    return sorted(found)


def append_index(day_files: Sequence[LogFile], size_of: Callable[[Path], int], limit: int) -> int:
    """Which of a day's files to append to: the newest, or a new one once it is full.

    Every process of a node runs this same rule on the same names, so when one file fills
    they all move on to the same next file.
    """
    if not day_files:
        return 0
    newest = max(day_files)
    if limit and size_of(newest.path) >= limit:
        return newest.index + 1
    return newest.index


def expired(files: Sequence[LogFile], now: datetime, max_age: timedelta) -> list[LogFile]:
    """The files whose whole day ended more than `max_age` before `now` (none for 0)."""
    if max_age <= timedelta(0):
        return []
    cutoff = now - max_age
    return [f for f in files if _day_end(f.day) <= cutoff]


def _day_end(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), time(), UTC)


def read_events(
    directory: Path, first: date | None = None, last: date | None = None
) -> Iterator[dict[str, Any]]:
    """Every event of a tracking directory in file order, one line at a time."""
    for log_file in log_files(directory, first, last):
        try:
            handle = log_file.path.open(encoding="utf-8", errors="replace")
        except FileNotFoundError:  # deleted for its age while we listed it
            continue
        with handle:
            for line in handle:
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(event, dict):
                    yield event
