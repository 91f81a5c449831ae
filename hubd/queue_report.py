"""Showing the queue to an operator: `hubd queue list` and `hubd queue show`, as text or JSON.

Owns: reading a node's queue for an operator without ever changing it (a read-only
`mode=ro` connection, never `immutable=1`, which would ignore the WAL; nothing created,
migrated or moved aside), the layout of queue listings (one line per message, then one per
recipient) and the JSON form scripts read.
Also: the queue's shape (qshape: waiting recipients by next hop and age) and a message's
stored bytes (postcat, export as .eml).
Also: a message's history, from the tracking log.
Public: read_queue(), read_shadows(), read_message(), read_history(), format_list(),
format_show(), show_json(), format_shadows(), to_json(), shadows_json(), queue_shape(),
format_shape(), shape_json(), rfc3339(), json_lines(), AGE_BUCKETS.
Failures: StorageError, one line, for a missing queue or one that cannot be read.
Limits: beside a running node what it shows can be a moment old.
See also: hubd/queue_changes.py (the changes).
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError

from hubd.admin.wire import message_json, rfc3339  # one JSON for the API and the CLI
from hubd.tracking import read_events
from storage import HeldShadow, QueuedMessage, QueueReader, RecipientState, open_reader
from storage.errors import StorageError
from storage.spool import Spool


async def read_queue(database: Path, queue_id: str | None = None) -> list[QueuedMessage]:
    """The queued messages of the database at `database` (or the one with `queue_id`)."""
    engine = open_reader(database)
    try:
        return await QueueReader(engine, Spool(database.with_name("spool"))).list_messages(queue_id)
    except DBAPIError as error:
        raise StorageError(f"{database}: cannot read the queue: {error.orig}") from None
    finally:
        await engine.dispose()


async def read_message(database: Path, queue_id: str) -> bytes | None:
    """The message with `queue_id` as stored (trace headers and all), or None."""
    engine = open_reader(database)
    try:
        body = await QueueReader(engine, Spool(database.with_name("spool"))).body_of(queue_id)
        return None if body is None else b"".join(body.chunks())
    except DBAPIError as error:
        raise StorageError(f"{database}: cannot read the queue: {error.orig}") from None
    except FileNotFoundError:  # delivered and its spool file removed while we read
        return None
    finally:
        await engine.dispose()


async def read_shadows(database: Path) -> list[HeldShadow]:
    """The shadows this node holds for its peers."""
    engine = open_reader(database)
    try:
        return await QueueReader(engine, Spool(database.with_name("spool"))).shadows()
    except DBAPIError as error:
        raise StorageError(f"{database}: cannot read the queue: {error.orig}") from None
    finally:
        await engine.dispose()


def json_lines(items: Iterable[Mapping[str, Any]]) -> str:
    """One JSON object per line ("" for none)."""
    return "\n".join(json.dumps(item, ensure_ascii=False) for item in items)


def shadows_json(shadows: list[HeldShadow]) -> str:
    """The shadows, one JSON object per line."""
    return json_lines(
        {
            "queue_id": s.queue_id,
            "peer": s.peer_name,
            "peer_address": s.peer_address,
            "peer_incarnation": s.peer_incarnation,
            "peer_queue_id": s.peer_queue_id,
            "created_at": rfc3339(s.created_at),
            "recipients": list(s.recipients),
        }
        for s in shadows
    )


def format_shadows(shadows: list[HeldShadow]) -> str:
    """One line per shadow: our queue id, the peer and its queue id, the recipients."""
    if not shadows:
        return "no shadows held"
    lines = [
        f"{s.queue_id}  {s.peer_name} ({s.peer_address}) as {s.peer_queue_id}  "
        f"since {_when(s.created_at)}  {', '.join(s.recipients)}"
        for s in shadows
    ]
    lines.append(f"-- {len(shadows)} shadows")
    return "\n".join(lines)


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def to_json(messages: list[QueuedMessage]) -> str:
    """The listing, one JSON object per message and line (times in RFC 3339)."""
    return json_lines(message_json(m) for m in messages)


def format_list(messages: list[QueuedMessage]) -> str:
    """One line per message, then an indented line per recipient."""
    if not messages:
        return "queue is empty"
    lines = []
    for message in messages:
        sender = message.sender or "<>"
        lines.append(
            f"{message.queue_id}  {message.size:>9}  {_when(message.received_at)}  {sender}"
        )
        for r in message.recipients:
            detail = f"next {_when(r.next_attempt_at)}" if str(r.state) == "PENDING" else ""
            line = f"    {r.address}  {r.state}  {r.next_hop}  attempts={r.attempts}  {detail}"
            lines.append(line.rstrip())
            if r.last_error:
                lines.append(f"        last: {r.last_error}")
    total = sum(len(m.recipients) for m in messages)
    lines.append(f"-- {len(messages)} messages, {total} recipients")
    return "\n".join(lines)


def read_history(tracking: Path, message: QueuedMessage) -> list[dict[str, Any]]:
    """The message's tracking events (in the logs of the days since it was received)."""
    first = datetime.fromtimestamp(message.received_at, UTC).date()
    return [e for e in read_events(tracking, first) if e.get("queue_id") == message.queue_id]


def format_show(message: QueuedMessage, history: Sequence[Mapping[str, Any]] = ()) -> str:
    """Every field of one message, then its history from the tracking log."""
    data = message_json(message)
    lines = [f"{key}: {value}" for key, value in data.items() if key != "recipients"]
    for r in data["recipients"]:
        lines.append(f"recipient: {r['address']}")
        lines.extend(f"    {k}: {v}" for k, v in r.items() if k != "address")
    for event in history:
        to = ", ".join(event.get("recipients") or [])
        line = (
            f"history: {event.get('time')}  {event.get('event')}  {to}  {event.get('reply') or ''}"
        )
        lines.append(line.rstrip())
    return "\n".join(lines)


def show_json(message: QueuedMessage, history: Sequence[Mapping[str, Any]]) -> str:
    """One message as one JSON line, its tracking events under "history"."""
    return json_lines([{**message_json(message), "history": list(history)}])


# qshape's buckets: minutes since the message was received, each bucket up to its bound.
AGE_BUCKETS = (5, 10, 20, 40, 80, 160, 320, 640, 1280)
_WAITING = frozenset({RecipientState.PENDING, RecipientState.HELD})


def queue_shape(messages: list[QueuedMessage], now: float) -> dict[str, list[int]]:
    """Waiting (pending or held) recipients per next hop: the total, then a count per age
    bucket (AGE_BUCKETS, then older), busiest next hop first."""
    shape: dict[str, list[int]] = {}
    for message in messages:
        minutes = max(0.0, now - message.received_at) / 60
        bucket = bisect.bisect_left(AGE_BUCKETS, minutes)
        for r in message.recipients:
            if r.state in _WAITING:
                row = shape.setdefault(r.next_hop, [0] * (len(AGE_BUCKETS) + 2))
                row[0] += 1
                row[bucket + 1] += 1
    return dict(sorted(shape.items(), key=lambda item: (-item[1][0], item[0])))


def _bucket_names() -> list[str]:
    return [f"{b}m" for b in AGE_BUCKETS] + [f"{AGE_BUCKETS[-1]}m+"]


def format_shape(shape: dict[str, list[int]]) -> str:
    """A qshape table: a next hop per line, the total and each age bucket in columns."""
    header = ["next hop", "T", *_bucket_names()]
    total = [sum(column) for column in zip(*shape.values(), strict=True)] if shape else []
    rows = [[hop, *map(str, counts)] for hop, counts in shape.items()]
    rows.insert(0, ["TOTAL", *map(str, total or [0] * (len(AGE_BUCKETS) + 2))])
    width = max(len(r[0]) for r in [header, *rows])
    lines = []
    for row in [header, *rows]:
        lines.append(row[0].ljust(width) + "".join(cell.rjust(7) for cell in row[1:]))
    return "\n".join(lines)


def shape_json(shape: dict[str, list[int]]) -> str:
    """The shape, one object per next hop and line: total and a count per bucket."""
    names = _bucket_names()
    return json_lines(
        {"next_hop": hop, "total": counts[0], "ages": dict(zip(names, counts[1:], strict=True))}
        for hop, counts in shape.items()
    )
