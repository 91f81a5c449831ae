"""Errors of the queue database (part of the tree drawn in hubd/errors.py), and telling a
full disk from the other failures."""

from __future__ import annotations

import errno
import logging
import sqlite3


class StorageError(Exception):
    """The queue database cannot be opened or used."""


class SchemaTooNew(StorageError):
    """The queue database was written by a newer hubd."""


class QueueCorrupt(StorageError):
    """The queue database failed its integrity check."""


def is_disk_full(error: BaseException) -> bool:
    """Whether `error`, or what caused it, says the filesystem is full (ENOSPC, EDQUOT, or
    SQLite's SQLITE_FULL, also as SQLAlchemy wraps it)."""
    seen: BaseException | None = error
    for _ in range(8):  # a chain of causes is short; never follow a cycle for ever
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        code = getattr(seen, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF == sqlite3.SQLITE_FULL:
            return True
        orig = getattr(seen, "orig", None)  # sqlalchemy.exc.DBAPIError keeps the driver's
        seen = orig if isinstance(orig, BaseException) else (seen.__cause__ or seen.__context__)
    return False


def log_failure(logger: logging.Logger, what: str, error: BaseException) -> None:
    """Log that `what` failed: one line when the disk is full (expected then, and repeated
    until space returns, so a trace each time would bury the cause), else with the trace."""
    if is_disk_full(error):
        logger.error("%s failed: the disk is full (%s)", what, _first_line(error))
    else:
        logger.error("%s failed", what, exc_info=error)


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__
