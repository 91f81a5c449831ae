"""The queue's shape (qshape) and the JSON forms of queue listings, as plain values."""

from __future__ import annotations

import json

from hubd.queue_report import format_shape, queue_shape, rfc3339, shape_json
from storage import QueuedMessage, QueuedRecipient, RecipientState

NOW = 1_700_000_000.0


def _message(age_minutes: float, *recipients: tuple[str, RecipientState]) -> QueuedMessage:
    return QueuedMessage(
        queue_id="Q",
        sender="a@x.test",
        received_at=NOW - age_minutes * 60,
        size=10,
        message_id=None,
        origin="o",
        client="c",
        crashes=0,
        recipients=tuple(
            QueuedRecipient(f"r@{hop}", state, hop, 0, NOW, "") for hop, state in recipients
        ),
    )


def test_shape_counts_waiting_recipients_by_hop_and_age() -> None:
    """Pending and held recipients count in their message's age bucket; others do not."""
    pending, held, shadowed = RecipientState.PENDING, RecipientState.HELD, RecipientState.SHADOWED
    shape = queue_shape(
        [
            _message(1, ("a", pending), ("b", held), ("b", shadowed)),
            _message(7, ("a", pending)),
            _message(5000, ("a", pending)),
        ],
        NOW,
    )
    assert list(shape) == ["a", "b"]  # busiest first
    assert shape["a"] == [3, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1]
    assert shape["b"] == [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    table = format_shape(shape).splitlines()
    assert table[0].split()[-1] == "1280m+"
    assert table[1].split()[:2] == ["TOTAL", "4"]
    (first, second) = [json.loads(line) for line in shape_json(shape).splitlines()]
    assert first["next_hop"] == "a"
    assert first["ages"]["5m"] == 1
    assert first["ages"]["1280m+"] == 1
    assert second["total"] == 1


def test_empty_shape() -> None:
    """An empty queue has a TOTAL line of zeros and no JSON lines."""
    assert format_shape({}).splitlines()[1].split()[1:] == ["0"] * 11
    assert shape_json({}) == ""


def test_rfc3339() -> None:
    """Times for scripts are RFC 3339 in UTC."""
    assert rfc3339(0) == "1970-01-01T00:00:00Z"
