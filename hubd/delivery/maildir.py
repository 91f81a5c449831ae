"""Final delivery into Maildir for the node's local domains.

Owns: the mapping of a local part to a safe directory name, and idempotent, durable delivery
(tmp, fsync, rename into new/, fsync of new/).
Public: MaildirCourier, mailbox_dirname(), local_part_from_dirname(), maildir_filename(),
make_maildir(), deliver_file().
Failures: an OSError becomes a transient 451 4.3.0 result (disk full, permissions); a
full disk is marked `no_space` (no attempt counted) and its partial file is removed.
Limits: local parts are matched ASCII case-insensitively; the file name derives from the origin
key and the recipient, so a repeat after a crash, or another copy of the same origin key (an
upstream resubmitted it), finds the first copy in new/ (or in cur/ as "name:2,") and writes
no second one. Files keep the CRLF line ends of the wire.
See also: DESIGN.md (Mailboxes).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import os
import re
from collections.abc import Iterable
from pathlib import Path

from hubd.delivery.courier import DeliveryJob, RecipientResult
from hubd.queueid import queue_id_time
from storage.errors import is_disk_full

_PLAIN = re.compile(r"^[a-z0-9][a-z0-9._+-]{0,63}\Z")  # \Z: "$" would let "bob\n" through
_ENCODED_PREFIX = "="  # never the first character of a plain name


def mailbox_dirname(local_part: str) -> str:
    """The directory name of a local part: itself when plain, else a reversible encoding."""
    folded = local_part.lower() if local_part.isascii() else local_part
    if _PLAIN.match(folded) and ".." not in folded:
        return folded
    encoded = base64.b32encode(folded.encode("utf-8")).decode("ascii").rstrip("=").lower()
    return _ENCODED_PREFIX + encoded


def local_part_from_dirname(name: str) -> str:
    """Undo mailbox_dirname() (for the folded local part)."""
    if not name.startswith(_ENCODED_PREFIX):
        return name
    data = name[1:].upper()
    return base64.b32decode(data + "=" * (-len(data) % 8)).decode("utf-8")


def maildir_filename(
    received_at: float, queue_id: str, recipient: str, host: str, origin: str = ""
) -> str:
    """The deterministic Maildir file name for one recipient's copy of one message."""
    key = f"{origin}\0{recipient.lower()}" if origin else recipient.lower()
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
    safe_host = re.sub(r"[^A-Za-z0-9.-]", "_", host)
    return f"{int(received_at)}.{queue_id}_{digest[:16]}.{safe_host}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_maildir(folder: Path) -> None:
    """Create the Maildir `folder` and its tmp/, new/ and cur/ (mode 0700) where missing.

    Unlike mailbox.Maildir(create=True), which makes the three only together with a new
    folder, this completes a folder that a crash (or a concurrent first delivery) left
    without them. Each directory made is fsynced into its parent.
    """
    if all((folder / sub).is_dir() for sub in ("tmp", "new", "cur")):
        return
    folder.parent.parent.mkdir(parents=True, exist_ok=True)
    domain = (folder.parent, 0o777)  # as before: the umask decides
    for path, mode in (domain, *((folder / sub, 0o700) for sub in ("", "tmp", "new", "cur"))):
        try:
            path.mkdir(mode=mode)
        except FileExistsError:
            continue
        _fsync_dir(path.parent)


def deliver_file(folder: Path, name: str, parts: Iterable[bytes]) -> bool:
    """Put the bytes of `parts` into the Maildir `folder` as `name`; False when it is already
    there (then `parts` is not read)."""
    make_maildir(folder)
    final = folder / "new" / name
    if final.exists() or (folder / "cur" / f"{name}:2,").exists():
        return False
    temporary = folder / "tmp" / name
    try:
        with temporary.open("wb") as handle:
            for part in parts:
                handle.write(part)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError:
        temporary.unlink(missing_ok=True)  # a partial copy only takes the space that is short
        raise
    temporary.rename(final)
    _fsync_dir(folder / "new")
    return True


class MaildirCourier:
    """Delivers local-domain recipients into `root/<domain>/<local-part>/`."""

    def __init__(self, root: Path, hostname: str) -> None:
        self._root = root
        self._hostname = hostname

    async def deliver(self, job: DeliveryJob) -> list[RecipientResult]:
        return await asyncio.to_thread(self._deliver_all, job)

    def _deliver_all(self, job: DeliveryJob) -> list[RecipientResult]:
        trace = f"Return-Path: <{job.sender}>\r\n".encode("utf-8", "surrogateescape")
        # Named after the origin key alone, not this node's copy: the write that a crash left
        # unrecorded is then found by any copy, whichever is delivered first after a restart.
        # The time is the origin's receipt, read from its queue id (0 if it records none).
        queue_id = job.origin.rpartition(".")[2] if job.origin else job.queue_id
        received_at = queue_id_time(queue_id) or 0.0
        results = []
        for recipient in job.recipients:
            local_part = recipient.address.rpartition("@")[0]
            folder = self._root / job.next_hop.name / mailbox_dirname(local_part)
            name = maildir_filename(
                received_at, queue_id, recipient.address, self._hostname, origin=job.origin
            )
            try:
                written = deliver_file(folder, name, itertools.chain([trace], job.body.chunks()))
            except OSError as error:
                full = is_disk_full(error)
                results.append(
                    RecipientResult(
                        recipient, 451, f"4.3.0 Mailbox write failed: {error}", no_space=full
                    )
                )
                continue
            text = "2.0.0 Delivered to mailbox" if written else "2.0.0 Already in mailbox"
            results.append(RecipientResult(recipient, 250, text, remote=str(folder), final=True))
        return results
