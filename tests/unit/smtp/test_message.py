"""The trace header hubd adds, and the header section of a stored message."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy

import pytest

from hubd.smtp.data import ContentLimits, DataReader
from hubd.smtp.message import header_section, received_header

NOW = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


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
        reader = DataReader(ContentLimits(10_000, 1001, 10_000, 5))
        reader.feed(data + b".\r\n")
        summary = reader.summary()
        assert (summary.received, summary.fault) == (1, None)
