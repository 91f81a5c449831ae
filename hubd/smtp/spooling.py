"""Holding a message while it is received: in memory up to a threshold, then in a spool file.

Owns: the switch from memory to a spool file (storage/spool.py) once a message passes
`smtp.spool_threshold`, so a node's memory is bounded by configuration, not by what clients
send; throwing the file away when the message is refused or the client goes away.
Public: BodyBuffer, SpooledContent, Content.
Failures: OSError from the spool (a full disk) propagates; the session then answers 451.
Limits: writes are plain blocking writes of at most a DATA chunk (page cache); the fsync
that makes the file durable runs off the loop, at commit (hubd/intake.py).
See also: hubd/smtp/server.py (feeds it), hubd/intake.py (keeps the file), storage/spool.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from storage import Spool
from storage.spool import SpoolFile


@dataclass(frozen=True, slots=True)
class SpooledContent:
    """Content too big to hold: the spool file it is being written to, and its size."""

    file: SpoolFile
    size: int

    def discard(self) -> None:
        self.file.discard()


Content = bytes | SpooledContent


class BodyBuffer:
    """The content of one message as it arrives."""

    def __init__(self, spool: Spool | None, threshold: int) -> None:
        self._spool = spool
        self._threshold = threshold
        self._chunks: list[bytes] = []
        self._held = 0
        self._file: SpoolFile | None = None

    def add(self, content: bytes) -> None:
        if self._file is not None:
            self._file.write(content)
            return
        self._chunks.append(content)
        self._held += len(content)
        if self._spool is not None and self._held > self._threshold:
            self._file = self._spool.open()
            for chunk in self._chunks:
                self._file.write(chunk)
            self._chunks.clear()

    def clear(self) -> None:
        """Forget what was kept (the message is refused: the rest is read and dropped)."""
        self._chunks.clear()
        self._held = 0
        if self._file is not None:
            self._file.discard()
            self._file = None

    def result(self) -> Content:
        """What was received; the caller owns a spool file from now on."""
        if self._file is not None:
            return SpooledContent(self._file, self._file.size)
        return b"".join(self._chunks)
