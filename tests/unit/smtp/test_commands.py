"""Command lines split into verb and argument, their length limits, and HELO arguments."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hubd.smtp.commands import Command, is_utf8, line_limit, parse_command, valid_helo


class TestParseCommand:
    @pytest.mark.parametrize(
        ("line", "expected"),
        [
            (b"NOOP\r\n", Command("NOOP", "")),
            (b"noop\n", Command("NOOP", "")),
            (b"MAIL FROM:<a@b>  \r\n", Command("MAIL", "FROM:<a@b>")),
            (b"HELO evil\rX-Injected: yes\r\n", Command("HELO", "evil\rX-Injected: yes")),
            (b"EHLO \xff\xfe\r\n", Command("EHLO", "\udcff\udcfe")),
            (b"XQTAKEN2 a\r\n", Command("XQTAKEN2", "a")),
        ],
        ids=["plain", "lower-case-lf", "trailing-spaces", "inner-cr-kept", "binary", "digits"],
    )
    def test_parse(self, line: bytes, expected: Command) -> None:
        """The verb is upper-cased; the argument keeps every byte for the verb to judge."""
        assert parse_command(line) == expected

    @pytest.mark.parametrize(
        "line",
        [
            b"\r\n",
            b" NOOP\r\n",
            b"N\xc3\xb6OP\r\n",
            b"Host: x\r\n",
            b"1NOOP\r\n",
            b"A" * 17 + b"\r\n",
        ],
        ids=["empty", "leading-space", "non-ascii", "header", "digit-first", "long-verb"],
    )
    def test_no_command(self, line: bytes) -> None:
        """A line without an ASCII verb first is no command."""
        assert parse_command(line) is None

    @given(st.binary(max_size=100))
    def test_never_raises(self, line: bytes) -> None:
        """Any bytes give a command or None."""
        command = parse_command(line)
        assert command is None or command.verb.isupper()

    def test_line_limits(self) -> None:
        """512 octets for a command line, more for the verbs whose parameters need it."""
        assert line_limit("NOOP") == 512
        assert line_limit("MAIL") == line_limit("RCPT") == line_limit("XQTAKEN") == 4096


class TestHelo:
    @pytest.mark.parametrize(
        ("argument", "ok"),
        [
            ("client.test", True),
            ("[192.0.2.1]", True),
            ("bücher.example", True),
            ("evil\rX-Injected: yes", False),
            ("a\x00b", False),
            ("a\u200bb", False),
            ("\udcff\udcfe", False),
            ("a b", False),
            ("", False),
        ],
        ids=[
            "name",
            "literal",
            "utf8",
            "cr",
            "nul",
            "format-char",
            "invalid-utf8",
            "space",
            "empty",
        ],
    )
    def test_valid(self, argument: str, ok: bool) -> None:
        """One printable UTF-8 word; nothing that could change a header's lines."""
        assert valid_helo(argument) is ok

    def test_is_utf8(self) -> None:
        """Surrogate escapes mark bytes that were not UTF-8."""
        assert is_utf8("ü")
        assert not is_utf8("\udcff")
