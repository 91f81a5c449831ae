"""Bodies too big to hold: spool files beside the queue, durable before their commit.

Owns: <data_dir>/spool/ (files of committed or committing messages) and spool/tmp/ (files
being received); writing one (fsync of the file and of its directory before the commit
that refers to it), discarding one, reading one back in chunks; unlinking the files of
deleted bodies (collected by a trigger into spool_garbage); sweeping, at start-up, files
no row refers to.
Public: Spool, SpoolFile, SpooledBody, StoredBody, CHUNK.
Failures: OSError propagates (the session answers 451; nothing is committed).
Limits: a file is named by its message's queue id (unique within an incarnation), never
reused; the sweep must run before any session can spool (under the data-directory lock).
See also: storage/enqueue.py (the rows), storage/model.py (StoredBody).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1 << 16


@dataclass(frozen=True, slots=True)
class SpooledBody:
    """A spool file ready to be committed: its name under spool/ and its size."""

    name: str
    size: int


@dataclass(frozen=True, slots=True)
class StoredBody:
    """A queued message's bytes as delivery reads them: the stored head, then the spool
    file (if any), never all in memory at once when it is big."""

    head: bytes
    spool: Path | None = None
    spool_size: int = 0

    @property
    def size(self) -> int:
        return len(self.head) + self.spool_size

    def chunks(self) -> Iterator[bytes]:
        """The message in chunks of at most CHUNK bytes (blocking reads of the spool file)."""
        view = memoryview(self.head)
        for start in range(0, len(self.head), CHUNK):
            yield bytes(view[start : start + CHUNK])
        if self.spool is not None:
            with self.spool.open("rb") as handle:
                while chunk := handle.read(CHUNK):
                    yield chunk

    def prefix(self, limit: int) -> bytes:
        """The first `limit` bytes (or all, when shorter)."""
        out = bytearray()
        for chunk in self.chunks():
            out += chunk
            if len(out) >= limit:
                break
        return bytes(out[:limit])


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SpoolFile:
    """One body being received into a temporary file."""

    def __init__(self, spool: Spool) -> None:
        self._spool = spool
        self._path = spool.tmp / f"{secrets.token_hex(8)}.tmp"
        self._handle = self._path.open("xb")
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self._handle.write(chunk)
        self.size += len(chunk)

    def keep(self, name: str) -> SpooledBody:
        """Make the file durable as spool/<name> (blocking: fsyncs; run it off the loop)."""
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        final = self._spool.path(name)
        self._path.rename(final)
        _fsync_dir(final.parent)
        return SpooledBody(name, self.size)

    def discard(self) -> None:
        """Throw the file away (the message was refused, or the client went away)."""
        self._handle.close()
        self._path.unlink(missing_ok=True)


class Spool:
    """The spool directory of one queue."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.tmp = directory / "tmp"

    def prepare(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True, mode=0o700)

    def open(self) -> SpoolFile:
        return SpoolFile(self)

    def path(self, name: str) -> Path:
        return self.directory / name

    def body(self, head: bytes, name: str | None, size: int) -> StoredBody:
        """A stored message of `size` bytes: `head` as stored in the queue, then the rest
        in spool file `name` (none: `head` is all of it)."""
        if not name:
            return StoredBody(head)
        return StoredBody(head, self.path(name), size - len(head))

    def unlink(self, names: list[str]) -> None:
        for name in names:
            self.path(name).unlink(missing_ok=True)

    def sweep(self, referenced: set[str]) -> int:
        """Delete files no body refers to and every half-received one; how many went."""
        gone = 0
        for path in [*self.tmp.glob("*"), *self.directory.glob("*")]:
            if path.is_file() and (path.parent == self.tmp or path.name not in referenced):
                path.unlink(missing_ok=True)
                gone += 1
        return gone
