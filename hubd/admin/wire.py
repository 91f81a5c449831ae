"""The JSON forms the admin API speaks: queued messages, and listing filters as a query.

Owns: a QueuedMessage as a JSON object and back (times in RFC 3339, UTC, to the
microsecond, so the CLI prints what it would print from the file), a QueueFilter as URL
query parameters and back, and the messages a bulk change names as its JSON body.
Public: message_json(), message_from_json(), filter_query(), filter_from_query(), rfc3339(),
Selection, selection_json(), selection_from_json(), flush_hop_from_json().
Failures: filter_from_query(), selection_from_json() and flush_hop_from_json() raise
ValueError naming what is bad.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hubd.admin.filters import QueueFilter
from hubd.config import format_duration, parse_duration
from storage import QueuedMessage, QueuedRecipient, RecipientState


def rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def _timestamp(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def message_json(message: QueuedMessage) -> dict[str, Any]:
    """One queued message with its recipients, as the API sends it."""
    return {
        "queue_id": message.queue_id,
        "sender": message.sender,
        "received_at": rfc3339(message.received_at),
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
                "next_attempt_at": rfc3339(r.next_attempt_at),
                "last_error": r.last_error,
            }
            for r in message.recipients
        ],
    }


def message_from_json(data: Mapping[str, Any]) -> QueuedMessage:
    """The message an API answer describes."""
    return QueuedMessage(
        queue_id=str(data["queue_id"]),
        sender=str(data["sender"]),
        received_at=_timestamp(data["received_at"]),
        size=int(data["size"]),
        message_id=data["message_id"],
        origin=str(data["origin"]),
        client=str(data["client"]),
        crashes=int(data["crashes"]),
        recipients=tuple(
            QueuedRecipient(
                address=str(r["address"]),
                state=RecipientState(r["state"]),
                next_hop=str(r["next_hop"]),
                attempts=int(r["attempts"]),
                next_attempt_at=_timestamp(r["next_attempt_at"]),
                last_error=str(r["last_error"]),
            )
            for r in data["recipients"]
        ),
    )


def _seconds(value: float) -> str:
    return format_duration(timedelta(seconds=value))


def filter_query(selected: QueueFilter) -> dict[str, str]:
    """A filter as the query parameters of GET /queue/messages."""
    query: dict[str, str] = {}
    if selected.states:
        query["state"] = ",".join(sorted(selected.states))
    for key in ("next_hop", "sender", "recipient"):
        value = getattr(selected, key)
        if value is not None:
            query[key] = value
    if selected.older_than is not None:
        query["older_than"] = _seconds(selected.older_than)
    if selected.newer_than is not None:
        query["newer_than"] = _seconds(selected.newer_than)
    return query


@dataclass(frozen=True, slots=True)
class Selection:
    """The messages a bulk change names: ids, those with a recipient for a next hop, all."""

    queue_ids: tuple[str, ...] = ()
    next_hop: str | None = None
    every: bool = False
    dsn: bool = False  # remove: each sender gets a failure DSN for the recipients waiting
    to: str | None = None  # redirect: the host:port their waiting recipients go to


def selection_json(selection: Selection) -> dict[str, Any]:
    """The body of POST /queue/{action}."""
    return {
        "queue_ids": list(selection.queue_ids),
        "next_hop": selection.next_hop,
        "all": selection.every,
        "dsn": selection.dsn,
        "to": selection.to,
    }


def selection_from_json(data: object) -> Selection:
    """What a POST /queue/{action} body asks for; ValueError says what is wrong with it."""
    if not isinstance(data, dict):
        raise ValueError("expected an object with queue_ids, next_hop or all")
    unknown = sorted(set(data) - {"queue_ids", "next_hop", "all", "dsn", "to"})
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}")
    ids = data.get("queue_ids", [])
    hop = data.get("next_hop")
    every = data.get("all", False)
    dsn = data.get("dsn", False)
    to = data.get("to")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ValueError("queue_ids: expected a list of queue ids")
    if hop is not None and not isinstance(hop, str):
        raise ValueError("next_hop: expected a string")
    if not isinstance(every, bool):
        raise ValueError("all: expected true or false")
    if not isinstance(dsn, bool):
        raise ValueError("dsn: expected true or false")
    if to is not None and not isinstance(to, str):
        raise ValueError("to: expected 'host:port'")
    if not ids and hop is None and not every:
        raise ValueError("name queue_ids, a next_hop, or all")
    return Selection(tuple(ids), hop, every, dsn, to)


def flush_hop_from_json(data: object) -> str | None:
    """The next hop a POST /queue/flush body names (None: every one); ValueError if bad."""
    if not isinstance(data, dict) or set(data) - {"next_hop"}:
        raise ValueError('expected {"next_hop": H} or {"next_hop": null}')
    hop = data.get("next_hop")
    if hop is not None and not isinstance(hop, str):
        raise ValueError("next_hop: expected a string or null")
    return hop


def _duration(query: Mapping[str, str], key: str) -> float | None:
    if key not in query:
        return None
    try:
        return parse_duration(query[key]).total_seconds()
    except ValueError as error:
        raise ValueError(f"{key}: {error}") from None


def filter_from_query(query: Mapping[str, str]) -> QueueFilter:
    """The filter GET /queue/messages was asked for; ValueError names a bad parameter."""
    known = {"state", "next_hop", "sender", "recipient", "older_than", "newer_than"}
    unknown = sorted(set(query) - known)
    if unknown:
        raise ValueError(f"unknown parameter {unknown[0]!r} (known: {', '.join(sorted(known))})")
    states = [s for s in query.get("state", "").split(",") if s]
    return QueueFilter.build(
        states=states,
        next_hop=query.get("next_hop"),
        sender=query.get("sender"),
        recipient=query.get("recipient"),
        older_than=_duration(query, "older_than"),
        newer_than=_duration(query, "newer_than"),
    )
