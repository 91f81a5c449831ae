"""Checks and trace headers on a received message's bytes."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy

import pytest

from hubd import replies
from hubd.replies import Reply
from hubd.smtp.message import (
    count_received,
    find_content_fault,
    header_section,
    message_id,
    received_header,
)

NOW = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


class TestFindContentFault:
    @pytest.mark.parametrize(
        ("data", "expected"),
        [
            (b"Subject: x\r\n\r\nhello\r\n", None),
            (b"", None),
            (b"\r\n", None),
            (b"Subject: caf\xc3\xa9\r\n\r\n\xff\xfe 8-bit\r\n", None),
            (b"Subject: x\r\n\r\nhello\nworld\r\n", replies.BARE_LINE_END),
            (b"\nSubject: x\r\n", replies.BARE_LINE_END),
            (b"Subject: x\r\n\r\nhello\rworld\r\n", replies.BARE_LINE_END),
            (b"Subject: x\r\n\r\nhello\r\r\n", replies.BARE_LINE_END),
            (b"Subject: x\r\n\r\nhello\r", replies.BARE_LINE_END),
            (b"Subject: x\r\n\r\nhello\n.\nMAIL FROM:<e@x>\r\n", replies.BARE_LINE_END),
            (b"Subject: x\r\n\r\nhel\x00lo\r\n", replies.NUL_IN_MESSAGE),
            (b"\x00", replies.NUL_IN_MESSAGE),
            (b"a\x00b\nc\r\n", replies.BARE_LINE_END),
        ],
        ids=[
            "clean",
            "empty",
            "empty-line",
            "8-bit",
            "bare-lf",
            "bare-lf-first",
            "bare-cr",
            "cr-cr-lf",
            "cr-at-end",
            "smuggling",
            "nul",
            "only-nul",
            "line-end-reported-before-nul",
        ],
    )
    def test_fault(self, data: bytes, expected: Reply | None) -> None:
        """Only CRLF may end a line (RFC 5321 2.3.8) and NUL is never allowed (RFC 6152)."""
        assert find_content_fault(data) is expected


class TestHeaderSection:
    @pytest.mark.parametrize(
        ("data", "expected"),
        [
            (b"A: 1\r\nB: 2\r\n\r\nbody\r\n", b"A: 1\r\nB: 2\r\n"),
            (b"A: 1\r\n", b"A: 1\r\n"),
            (b"\r\nA: 1\r\n", b""),
            (b"", b""),
        ],
        ids=["headers-and-body", "headers-only", "no-headers", "empty"],
    )
    def test_section(self, data: bytes, expected: bytes) -> None:
        """The header section ends at the first empty line and keeps its last CRLF."""
        assert header_section(data) == expected


class TestCountReceived:
    @pytest.mark.parametrize(
        ("data", "expected"),
        [
            (b"Subject: x\r\n\r\nbody\r\n", 0),
            (b"Received: a\r\nReceived: b\r\nSubject: x\r\n\r\nbody\r\n", 2),
            (b"received: a\r\nRECEIVED : b\r\nReceived\t: c\r\n\r\n", 3),
            (b"Received: a\r\n\tfolded\r\n  Received: not a header\r\n\r\n", 1),
            (b"X-Received: a\r\nReceived-SPF: pass\r\n\r\n", 0),
            (b"Received: a\r\n\r\nReceived: in the body\r\nReceived: again\r\n", 1),
            (b"\r\nReceived: body only\r\n", 0),
            (b"Subject: x\r\nReceived: a\r\n", 1),
        ],
        ids=[
            "none",
            "two",
            "any-case-and-space-before-colon",
            "continuation-not-counted",
            "other-names",
            "body-not-counted",
            "empty-header-section",
            "no-body",
        ],
    )
    def test_count(self, data: bytes, expected: int) -> None:
        """Only Received: fields of the header section count towards the hop limit."""
        assert count_received(data) == expected


class TestMessageId:
    @pytest.mark.parametrize(
        ("data", "expected"),
        [
            (b"Message-ID: <a@b.test>\r\nSubject: x\r\n\r\nbody\r\n", "<a@b.test>"),
            (b"message-id:<a@b.test>\r\n\r\n", "<a@b.test>"),
            (b"Message-Id :  <a@b.test>  \r\n\r\n", "<a@b.test>"),
            (b"Message-ID:\r\n <a@b.test>\r\nSubject: x\r\n\r\n", "<a@b.test>"),
            (b"Message-ID:\r\n\t<a@b.test>\r\n\r\n", "<a@b.test>"),
            (b"Message-ID: <long\r\n  @b.test>\r\nSubject: x\r\n\r\n", "<long @b.test>"),
            (b"Subject: x\r\nMessage-ID: <last@b.test>\r\n", "<last@b.test>"),
            (b"Subject: x\r\n\r\nMessage-ID: <body@b.test>\r\n", None),
            (b"Subject: x\r\n\r\n", None),
            (b"Message-ID: \r\nSubject: x\r\n\r\n", None),
            (b"X-Message-ID: <other@b.test>\r\n\r\n", None),
            (b"Message-ID: <\xff@b.test>\r\n\r\n", "<\ufffd@b.test>"),
        ],
        ids=[
            "plain",
            "lower-case-no-space",
            "spaces-around",
            "folded-before-value",
            "folded-with-tab",
            "folded-inside-value",
            "last-header-no-body",
            "only-in-body",
            "absent",
            "empty-value",
            "other-header",
            "undecodable-byte",
        ],
    )
    def test_value(self, data: bytes, expected: str | None) -> None:
        """The Message-ID header's value, unfolded and stripped, from the header section only."""
        assert message_id(data) == expected

    def test_truncated(self) -> None:
        """An absurdly long value is cut to one header line's worth (998 characters)."""
        value = message_id(b"Message-ID: <" + b"x" * 2000 + b"@b.test>\r\n\r\n")
        assert value is not None
        assert len(value) == 998


class TestReceivedHeader:
    def _header(self, recipients: list[str], client_ip: str = "192.0.2.7") -> bytes:
        return received_header(
            helo="client.test",
            client_ip=client_ip,
            hostname="hub.test",
            protocol="ESMTP",
            queue_id="0KPXTDXVN1KKN4TS5B",
            recipients=recipients,
            now=NOW,
        )

    def test_one_recipient(self) -> None:
        """With one recipient the header names it in a `for` clause before the date."""
        assert self._header(["bob@corp.test"]) == (
            b"Received: from client.test ([192.0.2.7])\r\n"
            b"\tby hub.test (hubd) with ESMTP id 0KPXTDXVN1KKN4TS5B\r\n"
            b"\tfor <bob@corp.test>; Tue, 14 Nov 2023 22:13:20 +0000\r\n"
        )

    def test_several_recipients(self) -> None:
        """With several recipients no `for` clause leaks the envelope."""
        assert self._header(["a@corp.test", "b@corp.test"]) == (
            b"Received: from client.test ([192.0.2.7])\r\n"
            b"\tby hub.test (hubd) with ESMTP id 0KPXTDXVN1KKN4TS5B"
            b"; Tue, 14 Nov 2023 22:13:20 +0000\r\n"
        )

    def test_ipv6_client(self) -> None:
        """An IPv6 client is written as an IPv6 address literal (RFC 5321 4.1.3)."""
        assert self._header(["bob@corp.test"], "2001:db8::7").startswith(
            b"Received: from client.test ([IPv6:2001:db8::7])\r\n"
        )

    @pytest.mark.parametrize(
        "recipients", [["bob@corp.test"], ["a@corp.test", "b@corp.test"]], ids=["one", "two"]
    )
    def test_parses_as_one_header(self, recipients: list[str]) -> None:
        """The folded header is one Received field to an RFC 5322 parser, counted once."""
        data = self._header(recipients) + b"Subject: x\r\n\r\nbody\r\n"
        parsed = message_from_bytes(data, policy=policy.SMTP)
        (value,) = parsed.get_all("Received") or []
        assert str(value).startswith("from client.test")
        assert parsed["Subject"] == "x"
        assert count_received(data) == 1
        assert find_content_fault(data) is None
