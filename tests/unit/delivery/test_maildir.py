"""Maildir naming (safe, reversible directory names) and idempotent file delivery."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hubd.delivery.maildir import (
    deliver_file,
    local_part_from_dirname,
    mailbox_dirname,
    maildir_filename,
)

_SAFE_NAME = re.compile(r"[a-z0-9._+=-]+")


def folded(local_part: str) -> str:
    """What hubd treats as the same mailbox: ASCII case-insensitive, anything else exact."""
    return local_part.lower() if local_part.isascii() else local_part


def assert_safe(name: str) -> None:
    assert name not in ("", ".", "..")
    assert "/" not in name
    assert "\x00" not in name
    assert _SAFE_NAME.fullmatch(name), name
    assert len(name.encode()) <= 255  # NAME_MAX


class TestMailboxDirname:
    @pytest.mark.parametrize(
        ("local_part", "expected"),
        [
            ("bob", "bob"),
            ("bob.smith+tag", "bob.smith+tag"),
            ("b-o_b", "b-o_b"),
            ("0day", "0day"),
            ("Bob", "bob"),
            ("BOB.Smith", "bob.smith"),
            ("x" * 64, "x" * 64),
        ],
        ids=["plain", "dots-plus", "dash-underscore", "digit-first", "upper", "mixed", "64-long"],
    )
    def test_plain_names_are_themselves(self, local_part: str, expected: str) -> None:
        """A plain local part maps to itself, lower-cased."""
        assert mailbox_dirname(local_part) == expected

    @pytest.mark.parametrize(
        "local_part",
        [
            "../../x",
            "..",
            ".",
            "a/b",
            "/etc",
            ".hidden",
            "a..b",
            "",
            "=x",
            "-dash",
            "jörg",
            "Jörg",
            "用户",
            "é" * 32,
            "x" * 64 + "y",
            '"quoted local"',
            "bob\n",
            "sp ace",
        ],
        ids=[
            "traversal",
            "dot-dot",
            "dot",
            "slash",
            "absolute",
            "hidden",
            "double-dot-inside",
            "empty",
            "encoded-prefix",
            "leading-dash",
            "utf8",
            "utf8-upper",
            "cjk",
            "64-octet-utf8",
            "65-long",
            "quoted",
            "trailing-newline",
            "space",
        ],
    )
    def test_other_names_are_encoded(self, local_part: str) -> None:
        """Anything not plain becomes one safe, reversible component starting with '='."""
        name = mailbox_dirname(local_part)
        assert name.startswith("=")
        assert_safe(name)
        assert local_part_from_dirname(name) == folded(local_part)

    def test_case_folding_is_ascii_only(self) -> None:
        """ASCII case differences share a mailbox; non-ASCII names are kept exactly."""
        assert mailbox_dirname("BoB") == mailbox_dirname("bob")
        assert mailbox_dirname("A/B") == mailbox_dirname("a/b")
        assert mailbox_dirname("Jörg") != mailbox_dirname("jörg")

    @given(st.text(max_size=64))
    def test_round_trip(self, local_part: str) -> None:
        """Every local part gives a safe single path component that decodes to its folded self."""
        name = mailbox_dirname(local_part)
        assert_safe(name)
        assert local_part_from_dirname(name) == folded(local_part)

    @given(st.text(max_size=64), st.text(max_size=64))
    def test_distinct_mailboxes_get_distinct_names(self, a: str, b: str) -> None:
        """Two local parts share a directory only when they fold to the same name."""
        assert (mailbox_dirname(a) == mailbox_dirname(b)) == (folded(a) == folded(b))


class TestMaildirFilename:
    def test_deterministic(self) -> None:
        """The same message and recipient always give the same name."""
        first = maildir_filename(1_700_000_000.9, "0ABC", "bob@corp.test", "hub.test")
        assert first == maildir_filename(1_700_000_000.9, "0ABC", "bob@corp.test", "hub.test")
        assert first.startswith("1700000000.0ABC_")
        assert first.endswith(".hub.test")

    @pytest.mark.parametrize(
        ("a", "b", "same"),
        [
            (("0ABC", "bob@corp.test"), ("0ABC", "BOB@Corp.Test"), True),
            (("0ABC", "bob@corp.test"), ("0ABC", "alice@corp.test"), False),
            (("0ABC", "bob@corp.test"), ("0ABD", "bob@corp.test"), False),
        ],
        ids=["recipient-case", "other-recipient", "other-message"],
    )
    def test_identity(self, a: tuple[str, str], b: tuple[str, str], same: bool) -> None:
        """A name identifies one recipient's copy of one message, recipient case aside."""
        name_a = maildir_filename(1.0, a[0], a[1], "hub.test")
        name_b = maildir_filename(1.0, b[0], b[1], "hub.test")
        assert (name_a == name_b) is same

    @pytest.mark.parametrize(
        "host",
        ["hub/evil", "hub:2,S", "hub\x00x", "../..", "hüb"],
        ids=["slash", "info-suffix", "nul", "traversal", "non-ascii"],
    )
    def test_host_is_sanitised(self, host: str) -> None:
        """The host part cannot add a path component or a Maildir info suffix."""
        name = maildir_filename(1.0, "0ABC", "bob@corp.test", host)
        assert "/" not in name
        assert ":" not in name
        assert "\x00" not in name
        assert name not in (".", "..")


class TestDeliverFile:
    def test_writes_into_new(self, tmp_path: Path) -> None:
        """A first delivery creates the Maildir and leaves the data in new/, tmp/ empty."""
        folder = tmp_path / "corp.test" / "bob"
        assert deliver_file(folder, "m1", [b"data\r\n"]) is True
        assert (folder / "new" / "m1").read_bytes() == b"data\r\n"
        assert list((folder / "tmp").iterdir()) == []
        assert (folder / "cur").is_dir()

    def test_second_delivery_is_a_no_op(self, tmp_path: Path) -> None:
        """Delivering the same name again returns False and leaves exactly one file."""
        folder = tmp_path / "corp.test" / "bob"
        assert deliver_file(folder, "m1", [b"first\r\n"]) is True
        assert deliver_file(folder, "m1", [b"second\r\n"]) is False
        assert [p.name for p in (folder / "new").iterdir()] == ["m1"]
        assert (folder / "new" / "m1").read_bytes() == b"first\r\n"
        assert list((folder / "tmp").iterdir()) == []

    def test_already_read_counts_as_delivered(self, tmp_path: Path) -> None:
        """A copy the reader moved to cur/ (as name:2,) is not delivered again."""
        folder = tmp_path / "corp.test" / "bob"
        deliver_file(folder, "m1", [b"data\r\n"])
        (folder / "new" / "m1").rename(folder / "cur" / "m1:2,")
        assert deliver_file(folder, "m1", [b"data\r\n"]) is False
        assert list((folder / "new").iterdir()) == []

    def test_other_names_are_separate(self, tmp_path: Path) -> None:
        """Different names are different messages in the same Maildir."""
        folder = tmp_path / "corp.test" / "bob"
        assert deliver_file(folder, "m1", [b"1\r\n"]) is True
        assert deliver_file(folder, "m2", [b"2\r\n"]) is True
        assert sorted(p.name for p in (folder / "new").iterdir()) == ["m1", "m2"]
