"""Tracking queries as pure functions: which records a filter selects, and counts by key."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from hubd.tracking_query import (
    GroupKey,
    TrackFilter,
    count_by,
    counts_json,
    format_counts,
    parse_record,
    parse_time,
    record_json,
    search,
)


def line(
    time: str, node: str, event: str, sender: str = "a@x.test", *rcpts: str, **extra: Any
) -> dict[str, Any]:
    return {
        "time": time,
        "node": node,
        "event": event,
        "queue_id": extra.pop("queue_id", f"Q-{node}-{time}"),
        "message_id": extra.pop("message_id", None),
        "sender": sender,
        "recipients": list(rcpts or ("b@corp.test",)),
        "next_hop": None,
        "reply": None,
        **extra,
    }


HUB1 = [
    line("2026-11-25T08:59:59.999Z", "hub-1", "SEND"),
    line("2026-11-25T09:00:00.000Z", "hub-1", "SEND"),
    line(
        "2026-11-25T09:30:00.000Z",
        "hub-1",
        "RECEIVE",
        "Boss@Corp.test",
        "u1@corp.test",
        "u2@example.net",
    ),
    line("2026-11-25T09:59:59.999Z", "hub-1", "SEND", message_id="<m1@x>"),
    line("2026-11-25T10:00:00.000Z", "hub-1", "SEND"),
]
HUB2 = [
    line("2026-11-25T09:15:00.000Z", "hub-2", "SEND", "", "u1@corp.test"),
    line("2026-11-25T09:45:00.000Z", "hub-2", "DEFER"),
]


def select(selected: TrackFilter) -> list[dict[str, Any]]:
    return [dict(r.line) for r in search([HUB1, HUB2], selected)]


class TestFilter:
    def test_window_is_start_inclusive_end_exclusive(self) -> None:
        """Between 9 and 10 means 09:00:00.000 up to, not including, 10:00:00.000."""
        window = TrackFilter.build(
            events=["send"],
            start=parse_time("2026-11-25T09:00"),
            end=parse_time("2026-11-25T10:00Z"),
        )
        assert [(e["node"], e["time"][11:23]) for e in select(window)] == [
            ("hub-1", "09:00:00.000"),
            ("hub-2", "09:15:00.000"),
            ("hub-1", "09:59:59.999"),
        ]

    def test_streams_merge_in_time_order(self) -> None:
        """Records of several nodes come out in one time order."""
        times = [e["time"] for e in select(TrackFilter())]
        assert times == sorted(times)
        assert len(times) == len(HUB1) + len(HUB2)

    @pytest.mark.parametrize(
        ("selected", "expected"),
        [
            (TrackFilter.build(senders=["boss@corp.TEST"]), 1),
            (TrackFilter.build(senders=["@corp.test"]), 1),
            (TrackFilter.build(senders=[""]), 1),  # the null sender
            (TrackFilter.build(recipients=["U1@corp.test"]), 2),
            (TrackFilter.build(recipients=["@example.net"]), 1),
            (TrackFilter.build(message_ids=["m1@x"]), 1),
            (TrackFilter.build(message_ids=["<m1@x>"]), 1),
            (TrackFilter.build(nodes=["hub-2"]), 2),
            (TrackFilter.build(events=["defer", "RECEIVE"]), 2),
            (TrackFilter.build(queue_ids=["Q-hub-2-2026-11-25T09:45:00.000Z"]), 1),
            (TrackFilter.build(events=["SEND"], nodes=["hub-2"], recipients=["u1@corp.test"]), 1),
        ],
        ids=[
            "sender-any-case",
            "sender-domain",
            "null-sender",
            "recipient",
            "recipient-domain",
            "message-id",
            "message-id-brackets",
            "node",
            "events",
            "queue-id",
            "all-together",
        ],
    )
    def test_conditions(self, selected: TrackFilter, expected: int) -> None:
        """Each condition selects what it names, and conditions combine with AND."""
        assert len(select(selected)) == expected

    def test_domain_does_not_match_a_longer_domain(self) -> None:
        """'@corp.test' selects corp.test addresses, not notcorp.test ones."""
        selected = TrackFilter.build(recipients=["@corp.test"])
        record = parse_record(line("2026-11-25T09:00:00Z", "n", "SEND", "a@b", "x@notcorp.test"))
        assert record is not None
        assert not selected.matches(record)

    def test_bad_records_are_skipped(self) -> None:
        """Lines without a time or an event, or with a bad time, are not records."""
        assert parse_record({"event": "SEND"}) is None
        assert parse_record({"time": "yesterday", "event": "SEND"}) is None
        assert parse_record({"time": "2026-11-25T09:00:00Z", "event": 3}) is None
        record = parse_record({"time": "2026-11-25T09:00:00Z", "event": "SEND", "recipients": "x"})
        assert record is not None
        assert record.recipients == ()

    def test_files_to_read(self) -> None:
        """A window names the days whose files can hold its records (in UTC)."""
        selected = TrackFilter.build(
            start=parse_time("2026-11-25T23:30:00-02:00"), end=parse_time("2026-11-27")
        )
        assert (str(selected.first_day()), str(selected.last_day())) == ("2026-11-26", "2026-11-27")


class TestTimes:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("2026-11-25", datetime(2026, 11, 25, tzinfo=UTC)),
            ("2026-11-25T09:00", datetime(2026, 11, 25, 9, tzinfo=UTC)),
            ("2026-11-25 09:00:00Z", datetime(2026, 11, 25, 9, tzinfo=UTC)),
            ("2026-11-25T10:00:00+01:00", datetime(2026, 11, 25, 9, tzinfo=UTC)),
        ],
        ids=["date", "naive-is-utc", "zulu", "offset"],
    )
    def test_parse_time(self, text: str, expected: datetime) -> None:
        """RFC 3339 and ISO 8601 forms; no offset means UTC, like the log."""
        assert parse_time(text) == expected

    def test_bad_time(self) -> None:
        """A time that is none of those says which forms it takes."""
        with pytest.raises(ValueError, match="expected a time such as"):
            parse_time("9am")


class TestCounts:
    def test_sends_per_node_in_a_window(self) -> None:
        """'How many messages did each hub send between 9 and 10', as counts by node."""
        window = TrackFilter.build(
            events=["SEND"],
            start=parse_time("2026-11-25T09:00"),
            end=parse_time("2026-11-25T10:00"),
        )
        counts = count_by(search([HUB1, HUB2], window), [GroupKey.NODE])
        assert counts == {("hub-1",): 2, ("hub-2",): 1}
        assert [json.loads(x) for x in counts_json([GroupKey.NODE], counts)] == [
            {"node": "hub-1", "count": 2},
            {"node": "hub-2", "count": 1},
        ]

    def test_by_recipient_counts_each_recipient(self) -> None:
        """By recipient, a record with two recipients counts once for each (names lower-cased)."""
        records = search([HUB1], TrackFilter.build(events=["RECEIVE"]))
        counts = count_by(records, [GroupKey.RECIPIENT])
        assert counts == {("u1@corp.test",): 1, ("u2@example.net",): 1}

    def test_by_hour_and_event(self) -> None:
        """Counts by two keys group on both; hours are RFC 3339 starts of the hour."""
        counts = count_by(search([HUB1, HUB2], TrackFilter()), [GroupKey.HOUR, GroupKey.EVENT])
        assert counts == {
            ("2026-11-25T08:00:00Z", "SEND"): 1,
            ("2026-11-25T09:00:00Z", "SEND"): 3,
            ("2026-11-25T09:00:00Z", "RECEIVE"): 1,
            ("2026-11-25T09:00:00Z", "DEFER"): 1,
            ("2026-11-25T10:00:00Z", "SEND"): 1,
        }

    def test_total(self) -> None:
        """With no key, counting gives the total."""
        counts = count_by(search([HUB1, HUB2], TrackFilter.build(events=["SEND"])), [])
        assert format_counts([], counts) == "5"

    def test_table(self) -> None:
        """The text table has a header, one row per group, and the total."""
        counts = count_by(search([HUB1, HUB2], TrackFilter.build(events=["SEND"])), [GroupKey.NODE])
        assert format_counts([GroupKey.NODE], counts).splitlines() == [
            "node   count",
            "hub-1      4",
            "hub-2      1",
            "total      5",
        ]


def test_record_json_is_one_line_with_rfc3339_time() -> None:
    """--json prints each record on one line with its time in RFC 3339 UTC."""
    record = parse_record(line("2026-11-25T10:00:00.5+01:00", "n", "SEND", "a@b", "c@d"))
    assert record is not None
    text = record_json(record)
    assert "\n" not in text
    assert json.loads(text)["time"] == "2026-11-25T09:00:00.500Z"
