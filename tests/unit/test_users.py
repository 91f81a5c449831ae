"""The users file: its format, validation, atomic writes and a running node's re-reading."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hubd.users import User, UsersError, UsersFile, hash_password, read_users, write_users

HASH = hash_password("pw")


def test_round_trip_mode_0600(tmp_path: Path) -> None:
    """write_users makes missing directories and a file of mode 0600 that reads back."""
    path = tmp_path / "new" / "dir" / "users.toml"
    write_users(path, {"alice": User("alice", HASH, ("alice@corp.test",))})
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_users(path) == {"alice": User("alice", HASH, ("alice@corp.test",))}
    assert [p.name for p in path.parent.iterdir()] == ["users.toml"]  # no temporary left


def test_missing_file_is_no_users(tmp_path: Path) -> None:
    """A users file that does not exist yet holds no users."""
    assert read_users(tmp_path / "users.toml") == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[users.alice]\naddresses = ['a@corp.test']\n", "users.alice.password"),
        ("[users.alice]\npassword = 'plain'\naddresses = ['a@corp.test']\n", "argon2"),
        (f"[users.alice]\npassword = '{HASH}'\naddresses = []\n", "users.alice.addresses"),
        (f"[users.alice]\npassword = '{HASH}'\naddresses = ['nope']\n", "not an address"),
        (f"[users.'a b']\npassword = '{HASH}'\naddresses = ['a@c.test']\n", "a name is"),
        (f"[users.alice]\npassword = '{HASH}'\naddresses = ['a@c.test']\nx = 1\n", "keys"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_malformed_entries_named(tmp_path: Path, text: str, expected: str) -> None:
    """Each malformed entry is refused with a message naming what is wrong."""
    path = tmp_path / "users.toml"
    path.write_text(text)
    with pytest.raises(UsersError, match=expected):
        read_users(path)


def test_running_view_follows_the_file(tmp_path: Path) -> None:
    """UsersFile sees a changed file at the next check, and keeps the last good users when
    the file turns bad."""
    path = tmp_path / "users.toml"
    users = UsersFile(path)
    assert users.verify("alice", "pw") is None
    write_users(path, {"alice": User("alice", HASH, ("alice@corp.test",))})
    found = users.verify("alice", "pw")
    assert found is not None
    assert found.addresses == ("alice@corp.test",)
    assert users.verify("alice", "wrong") is None
    path.write_text("broken [")
    os.utime(path, ns=(1, 1))
    assert users.verify("alice", "pw") is not None
