"""Parsing and checking envelope addresses (RFC 5321 4.1.2, 4.5.3.1)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hubd.smtp.address import (
    MAX_ADDRESS_LENGTH,
    MAX_LOCAL_PART,
    Mailbox,
    parse_mailbox,
    split_path,
)


class TestParseMailbox:
    @pytest.mark.parametrize(
        ("address", "expected"),
        [
            ("bob@corp.test", Mailbox("bob", "corp.test")),
            ("Bob.Smith@CORP.Test", Mailbox("Bob.Smith", "corp.test")),
            ("bob@corp.test.", Mailbox("bob", "corp.test")),
            ('"a@b"@corp.test', Mailbox('"a@b"', "corp.test")),
            ("bob+tag@corp.test", Mailbox("bob+tag", "corp.test")),
            ("bob@[192.0.2.1]", Mailbox("bob", "[192.0.2.1]")),
            ("bob@[IPv6:2001:db8::1]", Mailbox("bob", "[ipv6:2001:db8::1]")),
            ("jörg@bücher.test", Mailbox("jörg", "bücher.test")),
            ("x" * MAX_LOCAL_PART + "@corp.test", Mailbox("x" * MAX_LOCAL_PART, "corp.test")),
            ("é" * 32 + "@corp.test", Mailbox("é" * 32, "corp.test")),
        ],
        ids=[
            "plain",
            "domain-lowered-local-kept",
            "trailing-dot",
            "quoted-at",
            "plus",
            "ipv4-literal",
            "ipv6-literal",
            "utf8",
            "64-octet-local",
            "64-octet-utf8-local",
        ],
    )
    def test_accepts(self, address: str, expected: Mailbox) -> None:
        """Well-formed addresses split at the last @, with the domain lower-cased."""
        assert parse_mailbox(address) == expected

    @pytest.mark.parametrize(
        "address",
        [
            "",
            "bob",
            "@corp.test",
            "bob@",
            "bob@corp..test",
            "bob@.",
            "b ob@corp.test",
            "bob@corp test",
            "b\x00ob@corp.test",
            "b\tob@corp.test",
            "b\rob@corp.test",
            "b\nob@corp.test",
            "b\x7fob@corp.test",
            "b\x1bob@corp.test",
            "bob@[not-an-ip]",
            "bob@cor]p.test",
            "x" * (MAX_LOCAL_PART + 1) + "@corp.test",
            "é" * 33 + "@corp.test",
            "b@" + "a" * (MAX_ADDRESS_LENGTH - 1),
            "b\udcffob@corp.test",
        ],
        ids=[
            "empty",
            "no-at",
            "no-local-part",
            "no-domain",
            "empty-label",
            "root-only",
            "space-in-local",
            "space-in-domain",
            "nul",
            "tab",
            "cr",
            "lf",
            "del",
            "esc",
            "bad-literal",
            "bracket-in-domain",
            "65-octet-local",
            "66-octet-utf8-local",
            "255-octet-address",
            "undecodable-byte",
        ],
    )
    def test_refuses(self, address: str) -> None:
        """Malformed, over-long or control-laden addresses give None."""
        assert parse_mailbox(address) is None

    def test_str(self) -> None:
        """A mailbox prints as local@domain."""
        assert str(Mailbox("bob", "corp.test")) == "bob@corp.test"

    @given(st.text(max_size=300))
    def test_never_raises(self, address: str) -> None:
        """Any text gives a Mailbox or None, and a Mailbox holds no control characters."""
        mailbox = parse_mailbox(address)
        if mailbox is not None:
            assert not any(ord(c) < 0x20 or c == "\x7f" for c in str(mailbox))
            assert mailbox.domain == mailbox.domain.lower()
            assert len(mailbox.local_part.encode()) <= MAX_LOCAL_PART

    @given(
        st.from_regex(r"[a-zA-Z0-9._+-]{1,64}", fullmatch=True),
        st.from_regex(r"[a-zA-Z0-9-]{1,20}(\.[a-zA-Z0-9-]{1,20}){0,3}\.?", fullmatch=True),
    )
    def test_round_trip(self, local_part: str, domain: str) -> None:
        """A parsed mailbox printed and parsed again is the same mailbox."""
        mailbox = parse_mailbox(f"{local_part}@{domain}")
        assert mailbox is not None
        assert mailbox.local_part == local_part
        assert parse_mailbox(str(mailbox)) == mailbox


class TestSplitPath:
    @pytest.mark.parametrize(
        ("argument", "expected"),
        [
            ("<a@b.test>", ("a@b.test", "")),
            ("<a@b.test> SIZE=10", ("a@b.test", " SIZE=10")),
            ("  <a@b.test>", ("a@b.test", "")),
            ("<>", ("", "")),
            ("a@b.test SIZE=10", ("a@b.test", "SIZE=10")),
            ('<"a>b"@c.test>', ('"a>b"@c.test', "")),
            ('<"a\\"b"@c.test>', ('"a\\"b"@c.test', "")),
            ("<@r1.test,@r2.test:a@b.test>", ("a@b.test", "")),
            ('"', ('"', "")),
        ],
        ids=[
            "plain",
            "parameters",
            "leading-space",
            "null",
            "no-brackets",
            "quoted-bracket",
            "quoted-escape",
            "source-route-dropped",
            "lone-quote-is-a-bare-path",
        ],
    )
    def test_split(self, argument: str, expected: tuple[str, str]) -> None:
        """The path inside the brackets and the text after it."""
        assert split_path(argument) == expected

    @pytest.mark.parametrize(
        "argument",
        ["", "<", "<a@b.test", '<"a@b.test>', "<a@b.test>x", "<a<b>", "<@r.test>"],
        ids=["empty", "open", "unclosed", "open-quote", "text-after", "nested", "route-only"],
    )
    def test_refused(self, argument: str) -> None:
        """Brackets or quotes that do not close, or glued text, are no path."""
        assert split_path(argument) is None

    @given(st.text(max_size=40))
    def test_never_raises(self, argument: str) -> None:
        """Any argument gives a split or None."""
        result = split_path(argument)
        assert result is None or isinstance(result[0], str)
