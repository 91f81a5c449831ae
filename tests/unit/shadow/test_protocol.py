"""The XSHADOW wire format, parsed and formatted without sockets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hubd import replies
from hubd.shadow.protocol import (
    Hello,
    parse_discard,
    parse_discard_reply,
    parse_hello,
    parse_hello_reply,
    parse_queued_reply,
    parse_taken,
    valid_origin,
)

INCARNATION = "9c04e1b2a7d35f60"


class TestHello:
    @pytest.mark.parametrize(
        ("argument", "expected"),
        [
            (f"hub-a {INCARNATION}", Hello("hub-a", INCARNATION)),
            (f"  hub-a   {INCARNATION} ", Hello("hub-a", INCARNATION)),
            ("hub-a", None),
            (f"hub-a {INCARNATION} extra", None),
            ("hub-a 9C04E1B2A7D35F60", None),
            (f"-bad {INCARNATION}", None),
            (None, None),
        ],
        ids=["plain", "spaces", "no-incarnation", "extra", "upper-hex", "bad-name", "none"],
    )
    def test_parse(self, argument: str | None, expected: Hello | None) -> None:
        """Only `<name> <16 lower-case hex>` is a hello."""
        assert parse_hello(argument) == expected

    def test_reply_round_trip(self) -> None:
        """The reply D sends (hubd/replies.py) is the one U parses."""
        me = Hello("hub-b", "5b1e0c7a9d2f4e33")
        code, text = str(replies.xshadow_identity(me.name, me.incarnation)).split(" ", 1)
        assert code == "250"
        assert parse_hello_reply(text) == me

    def test_reply_of_another_kind(self) -> None:
        """A reply without XSHADOW in it is no hello."""
        assert parse_hello_reply("2.0.0 Ok") is None


class TestDiscard:
    @pytest.mark.parametrize(
        ("argument", "expected"),
        [
            ("100", (100, None)),
            ("100 ACK=17", (100, 17)),
            ("0 ack=19", (0, 19)),
            ("5000", (1000, None)),
            ("ten", None),
            ("10 ACK=x", None),
            ("10 SEQ=4", None),
            ("", None),
        ],
        ids=["max", "ack", "lower-ack", "capped", "not-a-number", "bad-ack", "other-key", "empty"],
    )
    def test_parse(self, argument: str, expected: tuple[int, int | None] | None) -> None:
        """XQDISCARD <max> [ACK=<seq>]; max is capped at 1000."""
        assert parse_discard(argument) == expected

    def test_reply_lines(self) -> None:
        """One ID line per notice, then SEQ; with none, SEQ and the word none."""
        assert replies.discard_notices(["Q1", "Q2"], 19).lines() == [
            "250-2.0.0 ID=Q1",
            "250-2.0.0 ID=Q2",
            "250 2.0.0 SEQ=19",
        ]
        assert replies.discard_notices([], 7).lines() == ["250 2.0.0 SEQ=7 none"]

    @given(
        st.lists(st.text(alphabet="0123456789BCDFGHJ", min_size=1, max_size=19), max_size=20),
        st.integers(min_value=0, max_value=10**9),
    )
    def test_reply_round_trip(self, ids: list[str], seq: int) -> None:
        """What D formats, U reads back (as aiosmtplib joins a multi-line reply's texts)."""
        lines = replies.discard_notices(ids, seq).lines()
        text = "\n".join(line[4:] for line in lines)
        assert parse_discard_reply(text) == (ids, seq)

    def test_reply_without_seq(self) -> None:
        """A reply with no SEQ is not understood."""
        assert parse_discard_reply("2.0.0 ID=Q1") is None


class TestTakenOriginQueued:
    def test_taken(self) -> None:
        """XQTAKEN takes 1 to 50 queue ids."""
        assert parse_taken("Q1 Q2") == ["Q1", "Q2"]
        assert parse_taken("") is None
        assert parse_taken(" ".join(f"Q{n}" for n in range(51))) is None
        assert parse_taken("Q1 ../x") is None

    @pytest.mark.parametrize(
        ("value", "ok"),
        [
            (f"hub-a.{INCARNATION}.7Q3KZ9", True),
            (f"hub-a.{INCARNATION}", False),
            (f"hub a.{INCARNATION}.7Q3", False),
            (f"hub-a.{INCARNATION}.7Q3\r\nRCPT", False),
        ],
        ids=["good", "no-queue-id", "space", "injection"],
    )
    def test_origin(self, value: str, ok: bool) -> None:
        """An origin key is node.incarnation.queue-id, nothing else."""
        assert valid_origin(value) is ok

    def test_queued_reply(self) -> None:
        """The queue id is read from hubd's own 250 reply only."""
        assert parse_queued_reply("2.0.0 02Q32CD78215S0746L6 queued") == "02Q32CD78215S0746L6"
        assert parse_queued_reply("2.0.0 Ok: queued as 12345") is None
