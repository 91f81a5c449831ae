"""The reply catalog: codes that agree, multi-line replies, the bytes on the wire."""

from __future__ import annotations

import re

import pytest

from hubd import replies
from hubd.replies import Reply

CATALOG = {name: value for name, value in vars(replies).items() if isinstance(value, Reply)}


class TestCatalog:
    @pytest.mark.parametrize("name", sorted(CATALOG), ids=sorted(CATALOG))
    def test_codes_agree(self, name: str) -> None:
        """The enhanced code's class matches the basic code's first digit (RFC 3463)."""
        reply = CATALOG[name]
        assert 200 <= reply.code < 600
        if reply.code == 354:  # RFC 2034 exempts it
            assert reply.enhanced == ""
        else:
            assert re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", reply.enhanced)
            assert reply.enhanced[0] == str(reply.code)[0]
        assert reply.text
        assert "\r" not in reply.text
        assert "\n" not in reply.text

    @pytest.mark.parametrize(
        ("reply", "success", "transient"),
        [
            (Reply(250, "2.0.0", "Ok"), True, False),
            (Reply(451, "4.3.0", "Later"), False, True),
            (Reply(550, "5.1.1", "No"), False, False),
            (Reply(354, "", "Go on"), False, False),
        ],
        ids=["2xx", "4xx", "5xx", "3xx"],
    )
    def test_kind(self, reply: Reply, success: bool, transient: bool) -> None:
        """is_success and is_transient follow the first digit."""
        assert reply.is_success is success
        assert reply.is_transient is transient

    def test_str(self) -> None:
        """A reply prints as code, enhanced code and text, separated by single spaces."""
        assert str(Reply(550, "5.7.1", "Relay access denied")) == "550 5.7.1 Relay access denied"

    def test_queued(self) -> None:
        """The reply to DATA names the queue id."""
        assert str(replies.queued("0ABC")) == "250 2.0.0 0ABC queued"

    def test_multi_line(self) -> None:
        """Every line of a multi-line reply carries the code; all but the last a dash."""
        reply = replies.discard_notices(["Q1", "Q2"], 9)
        assert reply.lines() == ["250-2.0.0 ID=Q1", "250-2.0.0 ID=Q2", "250 2.0.0 SEQ=9"]
        assert reply.wire() == b"250-2.0.0 ID=Q1\r\n250-2.0.0 ID=Q2\r\n250 2.0.0 SEQ=9\r\n"

    def test_exempt_replies_are_uncoded(self) -> None:
        """The greeting and the EHLO reply carry no enhanced codes (RFC 2034)."""
        assert str(replies.greeting("hub.test")) == "220 hub.test ESMTP hubd"
        assert replies.ehlo("hub.test", ["SIZE 10"]).lines() == [
            "250-hub.test",
            "250-SIZE 10",
            "250 HELP",
        ]
        assert str(replies.help_commands(["NOOP", "DATA"])) == (
            "214 2.0.0 Supported commands: DATA NOOP"
        )
