"""Questions to the tracking log: filters, counts, and their output, over parsed records.

Owns: what a record is once read (TrackRecord), which records a query selects (TrackFilter:
event, sender, recipient, message id, queue id, node, time window), counting them by event,
sender, recipient, hour or node, merging several nodes' logs in time order, and printing
records and counts as text or as JSON lines with RFC 3339 times.
Public: TrackRecord, TrackFilter, GroupKey, parse_record(), parse_time(), search(),
count_by(), record_json(), format_record(), counts_json(), format_counts().
Failures: parse_time() raises ValueError naming the forms it takes; bad records are skipped.
Limits: pure functions over iterables: records stream through, only counts are kept.
A time without an offset is UTC, as the log is; the window is [start, end).
See also: hubd/tracking_files.py (reading the files), README.md (hubd track).
"""

from __future__ import annotations

import enum
import heapq
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any


@dataclass(frozen=True, slots=True)
class TrackRecord:
    """One tracking event as read back: the common fields, and the whole line."""

    time: datetime
    node: str
    event: str
    queue_id: str
    message_id: str | None
    sender: str
    recipients: tuple[str, ...]
    next_hop: str | None
    reply: str | None
    line: Mapping[str, Any]


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def parse_record(line: Mapping[str, Any]) -> TrackRecord | None:
    """A record from one decoded log line; None when its time or event is missing or bad."""
    stamp, event = _text(line.get("time")), _text(line.get("event"))
    if stamp is None or event is None:
        return None
    try:
        when = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    recipients = line.get("recipients")
    return TrackRecord(
        time=when if when.tzinfo else when.replace(tzinfo=UTC),
        node=_text(line.get("node")) or "",
        event=event,
        queue_id=_text(line.get("queue_id")) or "",
        message_id=_text(line.get("message_id")),
        sender=_text(line.get("sender")) or "",
        recipients=tuple(r for r in recipients if isinstance(r, str))
        if isinstance(recipients, list)
        else (),
        next_hop=_text(line.get("next_hop")),
        reply=_text(line.get("reply")),
        line=line,
    )


def parse_time(text: str) -> datetime:
    """An RFC 3339 or ISO 8601 time ("2026-11-25T09:00:00Z", "2026-11-25 09:00", or a date
    for its midnight); without an offset it is UTC."""
    try:
        if len(text) == 10:
            when = datetime.combine(date.fromisoformat(text), time())
        else:
            when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"expected a time such as '2026-11-25T09:00:00Z', '2026-11-25 09:00' or "
            f"'2026-11-25', got {text!r}"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _address_matcher(patterns: Iterable[str]) -> tuple[frozenset[str], tuple[str, ...]]:
    exact = frozenset(p.lower() for p in patterns if not p.startswith("@"))
    domains = tuple(p.lower() for p in patterns if p.startswith("@"))
    return exact, domains


def _address_matches(address: str, exact: frozenset[str], domains: tuple[str, ...]) -> bool:
    lowered = address.lower()
    return lowered in exact or lowered.endswith(domains)


def _bare_id(message_id: str) -> str:
    return message_id.strip().removeprefix("<").removesuffix(">")


@dataclass(frozen=True, slots=True)
class TrackFilter:
    """Which records a query selects; an empty field selects everything.

    Addresses match whole and without regard to case; "@corp.test" matches a domain.
    A Message-ID matches with or without its angle brackets.
    """

    events: frozenset[str] = frozenset()
    senders: frozenset[str] = frozenset()
    recipients: frozenset[str] = frozenset()
    message_ids: frozenset[str] = frozenset()
    queue_ids: frozenset[str] = frozenset()
    nodes: frozenset[str] = frozenset()
    start: datetime | None = None
    end: datetime | None = None

    def first_day(self) -> date | None:
        """The earliest day whose file can hold a selected record."""
        return self.start.astimezone(UTC).date() if self.start else None

    def last_day(self) -> date | None:
        """The latest day whose file can hold a selected record."""
        return self.end.astimezone(UTC).date() if self.end else None

    def matches(self, record: TrackRecord) -> bool:
        """Whether the record passes every condition."""
        if self.start is not None and record.time < self.start:
            return False
        if self.end is not None and record.time >= self.end:
            return False
        checks = (
            not self.events or record.event.upper() in self.events,
            not self.nodes or record.node in self.nodes,
            not self.queue_ids or record.queue_id in self.queue_ids,
            not self.message_ids
            or (record.message_id is not None and _bare_id(record.message_id) in self.message_ids),
        )
        if not all(checks):
            return False
        if self.senders and not _address_matches(record.sender, *_address_matcher(self.senders)):
            return False
        if self.recipients:
            exact, domains = _address_matcher(self.recipients)
            return any(_address_matches(r, exact, domains) for r in record.recipients)
        return True

    @classmethod
    def build(
        cls,
        *,
        events: Iterable[str] = (),
        senders: Iterable[str] = (),
        recipients: Iterable[str] = (),
        message_ids: Iterable[str] = (),
        queue_ids: Iterable[str] = (),
        nodes: Iterable[str] = (),
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> TrackFilter:
        """A filter from command-line values (events upper-cased, ids without brackets)."""
        return cls(
            events=frozenset(e.upper() for e in events),
            senders=frozenset(senders),
            recipients=frozenset(recipients),
            message_ids=frozenset(_bare_id(m) for m in message_ids),
            queue_ids=frozenset(queue_ids),
            nodes=frozenset(nodes),
            start=start,
            end=end,
        )


def search(
    streams: Iterable[Iterable[Mapping[str, Any]]], selected: TrackFilter
) -> Iterator[TrackRecord]:
    """The selected records of several logs (one stream per node), merged in time order."""
    parsed = [_records(stream, selected) for stream in streams]
    return heapq.merge(*parsed, key=lambda record: record.time)


def _records(lines: Iterable[Mapping[str, Any]], selected: TrackFilter) -> Iterator[TrackRecord]:
    for line in lines:
        record = parse_record(line)
        if record is not None and selected.matches(record):
            yield record


class GroupKey(enum.StrEnum):
    """What records can be counted by."""

    EVENT = "event"
    SENDER = "sender"
    RECIPIENT = "recipient"
    HOUR = "hour"
    NODE = "node"


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _hour(when: datetime) -> str:
    start = when.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return start.isoformat().replace("+00:00", "Z")


def _group_values(record: TrackRecord, key: GroupKey) -> tuple[str, ...]:
    if key is GroupKey.RECIPIENT:
        return tuple(dict.fromkeys(r.lower() for r in record.recipients)) or ("",)
    if key is GroupKey.SENDER:
        return (record.sender.lower(),)
    if key is GroupKey.HOUR:
        return (_hour(record.time),)
    if key is GroupKey.NODE:
        return (record.node,)
    return (record.event,)


def count_by(records: Iterable[TrackRecord], keys: Sequence[GroupKey]) -> Counter[tuple[str, ...]]:
    """How many records fall in each group; by recipient, a record counts once for each of
    its recipients. With no keys, one group () holds the total."""
    counts: Counter[tuple[str, ...]] = Counter()
    for record in records:
        groups: list[tuple[str, ...]] = [()]
        for key in keys:
            groups = [(*g, v) for g in groups for v in _group_values(record, key)]
        counts.update(groups)
    return counts


def record_json(record: TrackRecord) -> str:
    """One record as a JSON object on one line, its time in RFC 3339 (UTC)."""
    return json.dumps({**record.line, "time": _rfc3339(record.time)}, ensure_ascii=False)


def format_record(record: TrackRecord) -> str:
    """One record as a line of text."""
    parts = [
        _rfc3339(record.time),
        record.node,
        record.event,
        record.queue_id,
        f"<{record.sender}>",
        "->",
        ",".join(record.recipients) or "-",
    ]
    if record.next_hop:
        parts.append(f"via {record.next_hop}")
    if record.reply:
        parts.append(repr(record.reply))
    return " ".join(parts)


def counts_json(keys: Sequence[GroupKey], counts: Counter[tuple[str, ...]]) -> list[str]:
    """Each group as a JSON line: its key values and its count, groups in sorted order."""
    return [
        json.dumps({**dict(zip(keys, group, strict=True)), "count": n}, ensure_ascii=False)
        for group, n in sorted(counts.items())
    ]


def format_counts(keys: Sequence[GroupKey], counts: Counter[tuple[str, ...]]) -> str:
    """Groups as an aligned table with a count column and a total (just the total when
    nothing is grouped)."""
    total = sum(counts.values())
    if not keys:
        return str(total)
    table = [
        [*(str(k) for k in keys), "count"],
        *([*group, str(n)] for group, n in sorted(counts.items())),
        ["total", *([""] * (len(keys) - 1)), str(total)],
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(keys) + 1)]
    lines = []
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=False)]
        lines.append("  ".join([*cells, row[-1].rjust(widths[-1])]))
    return "\n".join(lines)
