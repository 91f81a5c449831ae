"""Showing the queue to an operator: `hubd queue list` and `hubd queue show`, as text or JSON.

Owns: reading a node's queue for an operator without ever changing it (a read-only
`mode=ro` connection, never `immutable=1`, which would ignore the WAL; nothing created,
migrated or moved aside), the layout of queue listings (one line per message, then one per
recipient) and the JSON form scripts read.
Public: read_queue(), read_shadows(), format_list(), format_show(), format_shadows(),
to_json(), shadows_json().
Failures: StorageError, one line, for a missing queue or one that cannot be read.
Limits: beside a running node what it shows can be a moment old.
See also: hubd/queue_changes.py (the changes).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError

from storage import HeldShadow, QueuedMessage, QueueReader, open_reader
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


async def read_shadows(database: Path) -> list[HeldShadow]:
    """The shadows this node holds for its peers."""
    engine = open_reader(database)
    try:
        return await QueueReader(engine, Spool(database.with_name("spool"))).shadows()
    except DBAPIError as error:
        raise StorageError(f"{database}: cannot read the queue: {error.orig}") from None
    finally:
        await engine.dispose()


def shadows_json(shadows: list[HeldShadow]) -> str:
    return json.dumps(
        [
            {
                "queue_id": s.queue_id,
                "peer": s.peer_name,
                "peer_address": s.peer_address,
                "peer_incarnation": s.peer_incarnation,
                "peer_queue_id": s.peer_queue_id,
                "created_at": _when(s.created_at),
                "recipients": list(s.recipients),
            }
            for s in shadows
        ],
        indent=2,
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


def _message_dict(message: QueuedMessage) -> dict[str, Any]:
    return {
        "queue_id": message.queue_id,
        "sender": message.sender,
        "received_at": _when(message.received_at),
        "size": message.size,
        "message_id": message.message_id,
        "origin": message.origin,
        "client": message.client,
        "crashes": message.crashes,
        "recipients": [
            {
                "address": r.address,
                "state": str(r.state),
                "next_hop": r.next_hop,
                "attempts": r.attempts,
                "next_attempt_at": _when(r.next_attempt_at),
                "last_error": r.last_error,
            }
            for r in message.recipients
        ],
    }


def to_json(messages: list[QueuedMessage]) -> str:
    """The listing as a JSON array (times in UTC, ISO-like)."""
    return json.dumps([_message_dict(m) for m in messages], indent=2, ensure_ascii=False)


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


def format_show(message: QueuedMessage) -> str:
    """Every field of one message."""
    data = _message_dict(message)
    lines = [f"{key}: {value}" for key, value in data.items() if key != "recipients"]
    for r in data["recipients"]:
        lines.append(f"recipient: {r['address']}")
        lines.extend(f"    {k}: {v}" for k, v in r.items() if k != "address")
    return "\n".join(lines)
