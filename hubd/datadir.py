"""The data-directory lock: one node at a time on a queue, held for the node's whole life.

Owns: an exclusive flock(2) on `<data_dir>/lock` with the holder's pid written inside, taken
before anything opens the queue; a second node on the same directory is refused at once.
Public: DataDirLock, acquire_data_dir(), DataDirInUse, LOCK_FILE.
Failures: DataDirInUse (a HubdError) naming the pid that holds the lock; OSError when the
directory cannot be made or the file opened.
Limits: flock is per open file description, so processes forked after the lock is taken
share it, and so do exec'd children given the descriptor (`inheritable()`, `pass_fds`);
the lock goes when the last of them exits. When the pid written inside is dead, its
children may still be exiting with the lock: wait up to `wait_for_dead` seconds for it.
Not on NFS (flock there is local to a client).
See also: hubd/cli.py (`hubd serve`), storage/repository.py (the leases this protects).
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from hubd.errors import HubdError

LOCK_FILE = "lock"
DEAD_HOLDER_WAIT = 10.0  # seconds: how long the children of a killed node may take to exit
_POLL = 0.1


class DataDirInUse(HubdError):
    """Another node holds this data directory's lock."""

    def __init__(self, directory: Path, pid: int | None, *, waited: float = 0.0) -> None:
        self.directory = directory
        self.pid = pid
        holder = f"pid {pid}" if pid is not None else "a process that wrote no pid"
        if waited:
            text = (
                f"data directory {directory} is still locked after {waited:.0f}s by what is "
                f"left of {holder} (no longer running); stop its processes and try again"
            )
        else:
            text = f"data directory {directory} is in use by another node ({holder})"
        super().__init__(text)


class DataDirLock:
    """A held data-directory lock; the descriptor stays open until release()."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd

    def inheritable(self, value: bool = True) -> int:
        """Let exec'd children inherit the lock (pass `fd` in `pass_fds` too); returns fd."""
        os.set_inheritable(self.fd, value)
        return self.fd

    def release(self) -> None:
        """Drop the lock (for this process; children holding the descriptor keep it)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.release()


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def read_holder(fd: int) -> int | None:
    """The pid written in a lock file, or None when it holds none."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (a zombie holds no locks, but counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def acquire_data_dir(
    directory: Path,
    *,
    wait_for_dead: float = DEAD_HOLDER_WAIT,
    on_wait: Callable[[int | None], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> DataDirLock:
    """Lock `directory` (made if missing) for this process, writing its pid in the lock file.

    A live holder raises DataDirInUse at once; a holder whose pid is dead (its children may
    still be exiting) is waited for up to `wait_for_dead` seconds, `on_wait` told once.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline: float | None = None
        while not _try_lock(fd):
            holder = read_holder(fd)
            if holder is not None and pid_alive(holder):
                raise DataDirInUse(directory, holder)
            if deadline is None:
                deadline = clock() + wait_for_dead
                if on_wait is not None:
                    on_wait(holder)
            elif clock() >= deadline:
                raise DataDirInUse(directory, holder, waited=wait_for_dead)
            sleep(_POLL)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    except BaseException:
        os.close(fd)
        raise
    return DataDirLock(path, fd)
