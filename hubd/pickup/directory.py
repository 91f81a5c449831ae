"""The pickup task: scan the pickup and replay directories and submit what is ready.

Owns: creating `<data_dir>/pickup/` and `<data_dir>/replay/` (mode 0700), scanning them every
`pickup.interval`, reading a ready file, committing it through the queue like any intake
(a `SUBMIT` tracking line), removing it, and setting a bad one aside as `NAME.bad` with the
reason in `NAME.reason`.
Public: Pickup, PickupLimits.
Failures: a file that cannot be committed (a storage error) stays and is tried at the next
scan; a file that is refused is renamed, never deleted; nothing is raised to the node.
Limits: one pickup task per node (in its peers process). A file is removed right after
its commit; if the node dies in between, the next run finds it under the same queue id:
still queued, it is just removed; already delivered and gone from the queue, it is
committed again with the same origin key, which a hubd final hop (Maildir, a mailstore)
drops as a duplicate, but a foreign next hop would get twice.
See also: hubd/pickup/envelope.py, hubd/pickup/scan.py, hubd/intake.py (SMTP's intake).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

from hubd.pickup.envelope import Refusal, Source, Submission, SubmissionLimits, read_submission
from hubd.pickup.scan import FileSeen, RateBudget, is_candidate, is_ready, queue_id_for
from hubd.routing import Router
from hubd.tracking import Tracker, TrackingEvent
from storage import NewMessage, NewRecipient, Repository
from storage.errors import log_failure

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PickupLimits:
    """The SMTP limits a dropped file is held to as well."""

    max_message_size: int
    max_line_length: int
    max_recipients: int
    max_received_headers: int


class _Changed(Exception):
    """The file changed or went away while it was read: look again at the next scan."""


def _read(path: Path, seen: FileSeen, limit: int) -> bytes:
    with path.open("rb") as handle:
        before = os.fstat(handle.fileno())
        if (before.st_ino, before.st_size, before.st_mtime_ns) != (
            seen.inode,
            seen.size,
            seen.mtime_ns,
        ):
            raise _Changed
        data = handle.read(limit + 1)
        after = os.fstat(handle.fileno())
    if len(data) != seen.size or after.st_mtime_ns != seen.mtime_ns:
        raise _Changed
    return data


def _remove(path: Path) -> None:
    # Synchronous on purpose: no other task runs between a file's commit and its removal.
    path.unlink(missing_ok=True)


class Pickup:
    """Submits the files dropped into a node's pickup and replay directories."""

    def __init__(
        self,
        *,
        directories: Mapping[Source, Path],
        repository: Repository,
        router: Router,
        tracker: Tracker,
        origin_prefix: str,
        hostname: str,
        limits: PickupLimits,
        interval: float,
        rate: int,
        on_commit: Callable[[Iterable[str]], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directories = dict(directories)
        self._repository = repository
        self._router = router
        self._tracker = tracker
        self._origin_prefix = origin_prefix
        self._hostname = hostname
        self._limits = limits
        self._interval = interval
        self._budget = RateBudget(rate, clock())
        self._on_commit = on_commit
        self._clock = clock
        self._stop = asyncio.Event()
        self._running = asyncio.Event()
        self._running.set()
        self._finished = asyncio.Event()
        self.scans = 0  # completed scans, for those who wait on the next one
        self.taken = 0

    async def run(self) -> None:
        """Make the directories, then scan every interval until stop()."""
        try:
            for path in self.directories.values():
                path.mkdir(mode=0o700, parents=True, exist_ok=True)
            while not self._stop.is_set():
                await self._running.wait()
                try:
                    await self.scan()
                except Exception as error:  # the task boundary: log and keep scanning
                    log_failure(log, "pickup scan", error)
                self.scans += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self._interval)
        finally:
            self._finished.set()

    def pause(self) -> None:
        """Take no more files until resume() (back pressure); a file being taken finishes."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    async def stop(self) -> None:
        """Finish the file being taken, then stop (before the queue's writer stops)."""
        self._stop.set()
        self._running.set()
        await self._finished.wait()

    async def scan(self) -> int:
        """Take every ready file once (oldest first, within the rate); returns how many."""
        taken = 0
        for seen, path in self._ready_files():
            if self._stop.is_set() or self.paused or not self._budget.take(self._clock()):
                break
            taken += await self._take(seen, path)
        return taken

    def _ready_files(self) -> list[tuple[FileSeen, Path]]:
        now = self._clock()
        found = []
        for source, directory in self.directories.items():
            try:
                entries = list(os.scandir(directory))
            except FileNotFoundError:
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                continue
            for entry in entries:
                if not is_candidate(entry.name):
                    continue
                try:
                    stat = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if not entry.is_file(follow_symlinks=False):
                    continue
                seen = FileSeen(source, entry.name, stat.st_ino, stat.st_size, stat.st_mtime_ns)
                if is_ready(seen, now, self._interval):
                    found.append((seen, Path(entry.path)))
        return sorted(found, key=lambda item: item[0].mtime_ns)

    async def _take(self, seen: FileSeen, path: Path) -> int:
        source = Source(seen.source)
        queue_id = queue_id_for(seen)
        if seen.size > self._limits.max_message_size:
            self._set_aside(
                path, f"larger than smtp.max_message_size ({self._limits.max_message_size} bytes)"
            )
            return 0
        try:
            result = await asyncio.to_thread(self._load, path, seen, source, queue_id)
        except (_Changed, FileNotFoundError):
            return 0
        if isinstance(result, Refusal):
            self._set_aside(path, result.reason)
            return 0
        if await self._repository.list_messages(queue_id):
            # Committed by a run that died before it could remove the file.
            log.warning("pickup: %r is already queued as %s; removing it", seen.name, queue_id)
            _remove(path)
            return 0
        try:
            next_hops = await self._commit(queue_id, source, seen, result)
        except Exception as error:  # a storage error: the file stays for the next scan
            log_failure(
                log, f"pickup: committing {seen.name!r} (it stays for the next scan)", error
            )
            return 0
        # No await from the commit to here: the file goes the moment its message is durable.
        _remove(path)
        self._on_commit(next_hops)
        self.taken += 1
        return 1

    def _load(
        self, path: Path, seen: FileSeen, source: Source, queue_id: str
    ) -> Submission | Refusal:
        data = _read(path, seen, self._limits.max_message_size)
        limits = SubmissionLimits(
            self._limits.max_line_length,
            self._limits.max_recipients,
            self._limits.max_received_headers,
        )
        return read_submission(data, source, limits, f"<{queue_id}.{source}@{self._hostname}>")

    async def _commit(
        self, queue_id: str, source: Source, seen: FileSeen, submission: Submission
    ) -> list[str]:
        """Commit the file's message and track it; returns the next hops it waits for."""
        now = self._clock()
        received = (
            f"Received: by {self._hostname} (hubd, from the {source} directory)\r\n"
            f"\tid {queue_id}; {format_datetime(datetime.fromtimestamp(now, UTC))}\r\n"
        ).encode()
        body = received + submission.data
        recipients = [
            NewRecipient(r, self._router.next_hop(r.rpartition("@")[2]).key)
            for r in submission.recipients
        ]
        await self._repository.enqueue(
            NewMessage(
                queue_id=queue_id,
                sender=submission.sender,
                recipients=recipients,
                body=body,
                received_at=now,
                message_id=submission.message_id,
                # From the file's identity, like the queue id: a file committed twice across
                # a crash is one message to a final hop's duplicate check.
                origin=f"{self._origin_prefix}.{queue_id}",
                client=f"{source} directory",
            )
        )
        self._tracker.record(
            TrackingEvent.SUBMIT,
            queue_id=queue_id,
            sender=submission.sender,
            recipients=submission.recipients,
            message_id=submission.message_id,
            size=len(body),
            source=str(source),
            file=seen.name,
        )
        return [r.next_hop for r in recipients]

    def _set_aside(self, path: Path, reason: str) -> None:
        stem = path.name.removesuffix(".eml")
        bad, note = path.with_name(f"{stem}.bad"), path.with_name(f"{stem}.reason")
        number = 1
        while bad.exists() or note.exists():
            bad, note = (
                path.with_name(f"{stem}-{number}.bad"),
                path.with_name(f"{stem}-{number}.reason"),
            )
            number += 1
        try:
            path.rename(bad)
            note.write_text(reason + "\n", encoding="utf-8", errors="backslashreplace")
        except OSError as error:
            log.error("pickup: cannot set %r aside: %s", path.name, error)
            return
        log.warning("pickup: %r refused (%s); renamed %r", path.name, reason, bad.name)
