"""The submission users file: who may AUTH, with which password, sending as which addresses.

Owns: the file's format (README, The users file), reading and validating it, writing it
(mode 0600, by an atomic rename), argon2 password hashes, and a running node's view of it
(re-read when the file changes, no restart).
Public: User, UsersError, read_users(), write_users(), hash_password(), valid_name(),
UsersFile.
Failures: UsersError naming the file and the entry at fault; a running node that finds the
file broken logs it and keeps the users it had.
Limits: names are plain ASCII (they appear in Received: headers); a password check costs
one argon2 verification (tens of milliseconds, 19 MiB), so it runs off the event loop
(hubd/smtp/credentials.py).
See also: hubd/cli.py (`hubd user`), hubd/smtp/credentials.py.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import threading
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import tomli_w
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from hubd.smtp.address import parse_mailbox

log = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}\Z")
# OWASP's argon2id minimum (19 MiB, two passes, one lane): a check costs tens of
# milliseconds, so a flood of AUTHs costs the node little. Hashes made with other parameters
# verify as well: they travel inside each hash.
_HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)


class UsersError(Exception):
    """The users file cannot be read, or an entry in it is malformed."""


@dataclass(frozen=True, slots=True)
class User:
    name: str
    password_hash: str  # argon2 ("$argon2id$...")
    addresses: tuple[str, ...]  # lower-case; the envelope senders it may use


def valid_name(name: str) -> bool:
    """A user name: ASCII letters, digits and . _ @ + -, at most 64, not starting with a sign."""
    return bool(_NAME.match(name))


def normal_address(address: str) -> str | None:
    """A sender address as the users file keeps it (lower-case), or None if malformed."""
    mailbox = parse_mailbox(address)
    return None if mailbox is None else address.lower()


def hash_password(password: str) -> str:
    """An argon2id hash of `password`."""
    return _HASHER.hash(password)


def read_users(path: Path) -> dict[str, User]:
    """The users in `path`; an empty dict when the file does not exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as error:
        raise UsersError(f"{path}: cannot read: {error}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise UsersError(f"{path}: not valid TOML: {error}") from None
    table = data.get("users", {})
    if not isinstance(table, dict) or set(data) - {"users"}:
        raise UsersError(f"{path}: expected only [users.NAME] tables")
    return {name: _user(path, name, entry) for name, entry in table.items()}


def _user(path: Path, name: str, entry: object) -> User:
    where = f"{path}: users.{name}"
    if not valid_name(name):
        raise UsersError(f"{where}: a name is ASCII letters, digits and . _ @ + - (64 at most)")
    if not isinstance(entry, dict) or set(entry) - {"password", "addresses"}:
        raise UsersError(f"{where}: expected the keys password and addresses")
    password = entry.get("password")
    if not isinstance(password, str) or not password.startswith("$argon2"):
        raise UsersError(f"{where}.password: expected an argon2 hash ('$argon2id$...')")
    addresses = entry.get("addresses")
    if not isinstance(addresses, list) or not addresses:
        raise UsersError(f"{where}.addresses: expected a list of addresses")
    normal = []
    for address in addresses:
        value = normal_address(address) if isinstance(address, str) else None
        if value is None:
            raise UsersError(f"{where}.addresses: not an address: {address!r}")
        normal.append(value)
    return User(name, password, tuple(normal))


def write_users(path: Path, users: Mapping[str, User]) -> None:
    """Write the users file: a temporary file of mode 0600 beside it, fsynced, renamed over it
    (a reader sees the old file or the new one, never half of one)."""
    document = {
        "users": {
            user.name: {"password": user.password_hash, "addresses": list(user.addresses)}
            for user in sorted(users.values(), key=lambda u: u.name)
        }
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(handle, 0o600)
        with os.fdopen(handle, "wb") as out:
            out.write(tomli_w.dumps(document).encode("utf-8"))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class UsersFile:
    """A running node's users: the file re-read whenever it changed. Thread-safe: password
    checks run in worker threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._users: dict[str, User] = {}
        self._decoy = _HASHER.hash("no such user")  # unknown users cost a check too

    def verify(self, name: str, password: str) -> User | None:
        """The user, when `password` is its password; None otherwise (unknown or wrong)."""
        user = self._current().get(name)
        try:
            _HASHER.verify(user.password_hash if user else self._decoy, password)
        except (VerificationError, InvalidHashError):
            return None
        return user

    def _current(self) -> dict[str, User]:
        with self._lock:
            try:
                info = os.stat(self.path)
                stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
            except FileNotFoundError:
                stamp = (0, 0, 0)
            except OSError as error:
                log.error("users file %s: %s; keeping the users read before", self.path, error)
                return self._users
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    self._users = read_users(self.path)
                    log.info("users file %s: %d users", self.path, len(self._users))
                except UsersError as error:
                    log.error("%s; keeping the users read before", error)
            return self._users
