"""Which dropped files to take now, under what queue id, and how many a minute.

Owns: the rules of a scan as pure functions: a file is taken when it is a non-empty `.eml`
not modified for one scan interval; its queue id is derived from the file's identity (name,
inode, size, modification time), so a file taken by a run that died before removing it
gets the same queue id (and origin key) again; the `rate` budget per minute.
Public: FileSeen, is_candidate(), is_ready(), queue_id_for(), RateBudget.
Limits: a file written in place that pauses longer than the interval can be taken half
written; write elsewhere and rename in, or write `name.eml.tmp` and rename it.
See also: hubd/pickup/directory.py.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from hubd.queueid import new_queue_id


@dataclass(frozen=True, slots=True)
class FileSeen:
    """A file as one scan saw it."""

    source: str
    name: str
    inode: int
    size: int
    mtime_ns: int


def is_candidate(name: str) -> bool:
    """Whether a directory entry is a file to submit (not hidden, not .tmp, .bad ...)."""
    return name.endswith(".eml") and not name.startswith(".") and len(name) > len(".eml")


def is_ready(seen: FileSeen, now: float, settle: float) -> bool:
    """Whether the file can be taken: not empty, and not modified in the last `settle` s."""
    return seen.size > 0 and now - seen.mtime_ns / 1e9 >= settle


def queue_id_for(seen: FileSeen) -> str:
    """The queue id a file is submitted under: the same for the same file, every run."""
    identity = f"{seen.source}\0{seen.name}\0{seen.inode}\0{seen.size}\0{seen.mtime_ns}"
    digest = hashlib.sha256(identity.encode("utf-8", "surrogateescape")).digest()
    return new_queue_id(seen.mtime_ns / 1e9, random.Random(int.from_bytes(digest[:16])))


class RateBudget:
    """At most `per_minute` files a minute (0: no limit), refilled continuously."""

    def __init__(self, per_minute: int, now: float) -> None:
        self._rate = per_minute
        self._tokens = float(per_minute)
        self._at = now

    def take(self, now: float) -> bool:
        """Spend one file of the budget; False when it is used up for now."""
        if self._rate == 0:
            return True
        self._tokens = min(float(self._rate), self._tokens + (now - self._at) * self._rate / 60)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True
