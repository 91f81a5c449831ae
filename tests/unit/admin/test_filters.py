"""QueueFilter and the API's JSON forms: pure functions over queue values."""

from __future__ import annotations

import pytest

from hubd.admin.filters import QueueFilter
from hubd.admin.wire import (
    Selection,
    filter_from_query,
    filter_query,
    flush_hop_from_json,
    message_from_json,
    message_json,
    selection_from_json,
    selection_json,
)
from storage import QueuedMessage, QueuedRecipient, RecipientState

NOW = 1_800_000_000.0


def _message(
    queue_id: str, sender: str, age: float, *recipients: tuple[str, RecipientState, str]
) -> QueuedMessage:
    return QueuedMessage(
        queue_id=queue_id,
        sender=sender,
        received_at=NOW - age,
        size=100,
        message_id=f"<{queue_id}@t>",
        origin=f"n.i.{queue_id}",
        client="c [127.0.0.1]",
        crashes=0,
        recipients=tuple(
            QueuedRecipient(a, s, h, 1, NOW + 60.5, "451 later") for a, s, h in recipients
        ),
    )


QUEUE = [
    _message("A", "alice@outside.test", 10, ("bob@corp.test", RecipientState.PENDING, "hop1")),
    _message(
        "B",
        "",
        7200,
        ("carol@corp.test", RecipientState.HELD, "hop2"),
        ("dave@else.test", RecipientState.PENDING, "hop1"),
    ),
]


def _ids(selected: QueueFilter) -> list[str]:
    return [m.queue_id for m in selected.select(QUEUE, NOW)]


class TestQueueFilter:
    def test_an_empty_filter_selects_everything(self) -> None:
        """No criterion: every message, in order."""
        assert _ids(QueueFilter()) == ["A", "B"]

    def test_recipient_criteria_must_hold_for_one_recipient(self) -> None:
        """State and next hop are matched on the same recipient, not across two."""
        assert _ids(QueueFilter.build(states=["held"])) == ["B"]
        assert _ids(QueueFilter.build(states=["HELD"], next_hop="hop1")) == []
        assert _ids(QueueFilter.build(states=["PENDING"], next_hop="hop1")) == ["A", "B"]

    def test_addresses_match_whole_or_by_domain_without_case(self) -> None:
        """bob@ matches bob only; @corp.test a whole domain; <> the null sender."""
        assert _ids(QueueFilter.build(recipient="BOB@corp.test")) == ["A"]
        assert _ids(QueueFilter.build(recipient="ob@corp.test")) == []
        assert _ids(QueueFilter.build(recipient="@corp.test")) == ["A", "B"]
        assert _ids(QueueFilter.build(sender="<>")) == ["B"]
        assert _ids(QueueFilter.build(sender="@outside.test")) == ["A"]

    def test_age_bounds(self) -> None:
        """older_than and newer_than compare with the time the message was received."""
        assert _ids(QueueFilter.build(older_than=3600)) == ["B"]
        assert _ids(QueueFilter.build(newer_than=3600)) == ["A"]
        assert _ids(QueueFilter.build(older_than=10)) == ["A", "B"]

    def test_an_unknown_state_is_named(self) -> None:
        """A typo in a state is an error that lists the states there are."""
        with pytest.raises(ValueError, match=r"unknown LOST.*PENDING"):
            QueueFilter.build(states=["lost"])


class TestWire:
    def test_a_message_survives_the_round_trip(self) -> None:
        """JSON and back gives the same message, times to the microsecond."""
        for message in QUEUE:
            assert message_from_json(message_json(message)) == message

    def test_a_filter_survives_the_query_string(self) -> None:
        """The CLI's filter reaches the API as it was meant."""
        selected = QueueFilter.build(
            states=["PENDING", "HELD"],
            next_hop="hop1",
            sender="",
            recipient="@corp.test",
            older_than=90,
            newer_than=0.25,
        )
        assert filter_from_query(filter_query(selected)) == selected
        assert filter_query(QueueFilter()) == {}

    def test_bad_parameters_are_named(self) -> None:
        """An unknown parameter or a bad duration is a ValueError naming it."""
        with pytest.raises(ValueError, match="colour"):
            filter_from_query({"colour": "red"})
        with pytest.raises(ValueError, match="older_than"):
            filter_from_query({"older_than": "soon"})

    def test_a_bulk_selection_survives_its_body(self) -> None:
        """Ids, a next hop, all and the DSN flag reach the API as they were meant."""
        for selection in (
            Selection(("A", "B")),
            Selection(next_hop="hop1"),
            Selection(every=True),
            Selection(("A",), dsn=True),
        ):
            assert selection_from_json(selection_json(selection)) == selection

    @pytest.mark.parametrize(
        "body",
        [
            [],
            {},
            {"queue_ids": "A"},
            {"queue_ids": [1]},
            {"all": "yes"},
            {"hop": "x"},
            {"all": True, "dsn": 1},
        ],
    )
    def test_a_bad_bulk_body_is_refused(self, body: object) -> None:
        """Not an object, nothing named, or a field of the wrong type: ValueError."""
        with pytest.raises(ValueError):  # noqa: PT011 (each body has its own message)
            selection_from_json(body)


class TestFlushBody:
    def test_a_flush_names_one_hop_or_every_one(self) -> None:
        """{"next_hop": H} flushes H, null every hop; anything else is refused."""
        assert flush_hop_from_json({"next_hop": "route:x"}) == "route:x"
        assert flush_hop_from_json({"next_hop": None}) is None
        assert flush_hop_from_json({}) is None
        for bad in ([], {"next_hop": 1}, {"hop": "x"}):
            with pytest.raises(ValueError, match="next_hop"):
                flush_hop_from_json(bad)
