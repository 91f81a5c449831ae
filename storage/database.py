"""Opening the queue database: pragmas, creation, schema version, integrity check.

Owns: the SQLite file of one node (WAL, synchronous=FULL, BEGIN IMMEDIATE for writes), its
incarnation id, and moving a corrupt file aside.
Public: prepare_queue(), open_database(), attach_database(), open_reader(), check_revision(),
Database.
Failures: SchemaTooNew when the file was written by a newer hubd; a file that fails
`PRAGMA quick_check`, or that SQLite calls corrupt or not a database (never merely locked),
is renamed to queue.db.corrupt-<time> and a new queue is created. An older schema is
migrated in place (storage/migrate.py), keeping the incarnation.
Limits: several processes may open the same file (SQLite locking); one writer at a time.
See also: storage/writer.py (the only user of the write engine), LIBNOTES.md section 5.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DatabaseError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from storage.errors import QueueCorrupt, SchemaTooNew, StorageError
from storage.schema import HEAD_REVISION, SCHEMA_VERSION, meta, metadata
from storage.shards import reshard
from storage.spool import Spool
from storage.sql import driver

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 10_000
PAGE_SIZE = 8192
# Only these say the file itself is damaged (and may be moved aside).
_CORRUPT = frozenset(
    {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
)  # bodies of tens of KB read faster in-database with 8 KiB pages (LIBNOTES 5)


@dataclass(slots=True)
class Database:
    """An open queue database: a synchronous write engine and a pooled async read engine.

    Writes run as whole batches in the writer's own thread (storage/writer.py): through
    aiosqlite every statement would be a hop between threads, and a batch has thousands.
    Reads are few and small, and go through aiosqlite so they never block the event loop.
    """

    path: Path
    write_engine: Engine
    read_engine: AsyncEngine
    incarnation: str

    @property
    def spool(self) -> Spool:
        """Where this queue's bodies too big to hold live."""
        return Spool(self.path.with_name("spool"))

    @property
    def write_lock(self) -> Path:
        """The file every writer of this queue, in any process, takes turns on."""
        return self.path.with_name("write.lock")

    async def close(self) -> None:
        """Close every connection (aiosqlite threads would otherwise keep the process alive)."""
        self.write_engine.dispose()
        await self.read_engine.dispose()


def _on_connect(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _on_begin(conn: Connection) -> None:
    # Take the write lock up front: a deferred read-then-write upgrade can fail with SQLITE_BUSY.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _no_auto_checkpoint(dbapi_conn: Any, _record: Any) -> None:
    # storage/checkpoint.py checkpoints in the background instead of inside a commit.
    dbapi_conn.execute("PRAGMA wal_autocheckpoint=0")


def _write_engine(path: Path, *, background_checkpoints: bool = False) -> Engine:
    # One connection, used only from the writer's thread (check_same_thread stays on).
    engine = create_engine(f"sqlite:///{path}", pool_size=1, max_overflow=0)
    event.listen(engine, "connect", _on_connect)
    if background_checkpoints:
        event.listen(engine, "connect", _no_auto_checkpoint)
    event.listen(engine, "begin", _on_begin)
    return engine


def _read_engine(path: Path) -> AsyncEngine:
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}", pool_size=4, max_overflow=4)
    event.listen(engine.sync_engine, "connect", _on_connect)
    return engine


def _prepare_file(engine: Engine, make_incarnation: Callable[[], str], shards: int) -> str:
    with engine.connect() as conn:
        return _prepare(conn, make_incarnation, shards)


def _create_file(path: Path) -> None:
    # The page size is fixed when the first table is made, so set it before SQLAlchemy runs.
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
        conn.execute("PRAGMA journal_mode=WAL")
    conn.close()


def _check_integrity(path: Path) -> None:
    try:
        with sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000) as conn:
            result = conn.execute("PRAGMA quick_check").fetchone()
        conn.close()
    except sqlite3.DatabaseError as error:
        if getattr(error, "sqlite_errorcode", None) not in _CORRUPT:
            # "database is locked" and the like: never a reason to move the file aside.
            raise StorageError(f"{path}: {error}") from None
        raise QueueCorrupt(f"{path}: {error}") from None
    if result is None or result[0] != "ok":
        raise QueueCorrupt(f"{path}: quick_check says {result!r}")


def _quarantine(path: Path, now: float) -> Path:
    """Move a corrupt queue file (and its WAL) aside, never deleting it."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            source.rename(target.with_name(target.name + suffix))
    return target


def _prepare(conn: Connection, make_incarnation: Callable[[], str], shards: int) -> str:
    """Create the schema on a new file, or check and migrate an existing one."""
    with conn.begin():
        incarnation = _create_or_migrate(conn, make_incarnation)
        reshard(driver(conn), shards)
        return incarnation


def _revision(conn: Connection) -> str | None:
    """The Alembic revision the file records, or None (no table, or no row)."""
    table = conn.exec_driver_sql(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='alembic_version'"
    ).first()
    if table is None:
        return None
    row = conn.exec_driver_sql("SELECT version_num FROM alembic_version").first()
    return None if row is None else str(row[0])


def _create_or_migrate(conn: Connection, make_incarnation: Callable[[], str]) -> str:
    has_meta = conn.exec_driver_sql(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
    ).first()
    if has_meta is None:
        from storage.migrate import stamp_new  # Alembic: see below

        metadata.create_all(conn)
        incarnation = make_incarnation()
        conn.execute(
            meta.insert(),
            [
                {"key": "schema_version", "value": str(SCHEMA_VERSION)},
                {"key": "incarnation", "value": incarnation},
            ],
        )
        stamp_new(conn)
        return incarnation
    rows = dict(conn.execute(select(meta.c.key, meta.c.value)).all())
    version = int(rows.get("schema_version", "0"))
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"queue database schema version {version} is newer than this hubd supports "
            f"({SCHEMA_VERSION}); upgrade hubd, or point node.data_dir at another directory"
        )
    if _revision(conn) != HEAD_REVISION:
        # Alembic is imported only to create or migrate: the usual start finds the file at
        # the newest revision, and a node's children only attach to a prepared file.
        from storage.migrate import upgrade

        if upgrade(conn):
            log.warning("queue database upgraded from schema version %d", version)
    return str(rows["incarnation"])


def prepare_queue(
    path: Path,
    *,
    shards: int = 1,
    now: Callable[[], float] = time.time,
    make_incarnation: Callable[[], str] = lambda: secrets.token_hex(8),
) -> str:
    """Check, create or migrate the queue file at `path` for `shards` delivery processes;
    returns its incarnation. Only the one owner of the file's lifecycle calls this."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        try:
            _check_integrity(path)
        except QueueCorrupt as error:
            moved = _quarantine(path, now())
            log.error("queue database failed its integrity check (%s); moved to %s", error, moved)
    if not path.exists():
        _create_file(path)
    engine = _write_engine(path)
    try:
        return _prepare_file(engine, make_incarnation, shards)
    except DatabaseError as error:
        code = getattr(error.orig, "sqlite_errorcode", None)
        kind = QueueCorrupt if code in _CORRUPT else StorageError
        raise kind(f"{path}: {error.orig}") from error
    finally:
        engine.dispose()


def _incarnation(path: Path) -> str:
    if not path.exists():
        raise StorageError(f"{path}: no queue database here")
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000) as conn:
        row = conn.execute("SELECT value FROM meta WHERE key = 'incarnation'").fetchone()
    conn.close()
    if row is None:
        raise StorageError(f"{path}: not a prepared hubd queue")
    return str(row[0])


async def open_database(
    path: Path, *, background_checkpoints: bool = False, **prepare: Any
) -> Database:
    """Prepare the queue database at `path` (see prepare_queue) and open it."""
    await asyncio.to_thread(lambda: prepare_queue(path, **prepare))
    return await attach_database(path, background_checkpoints=background_checkpoints)


async def attach_database(path: Path, *, background_checkpoints: bool = False) -> Database:
    """Open a queue file its owner already prepared (a node's child process does this).

    With `background_checkpoints`, the writer never checkpoints inside a commit: a
    storage.Upkeep must run beside it.
    """
    incarnation = await asyncio.to_thread(_incarnation, path)
    engine = _write_engine(path, background_checkpoints=background_checkpoints)
    return Database(path, engine, _read_engine(path), incarnation)


def check_revision(path: Path) -> None:
    """Refuse (StorageError) a queue file that is missing or whose schema is not exactly this
    hubd's: an operator's change to a stopped node's queue never creates or migrates it (the
    node does that at its next start)."""
    if not path.exists():
        raise StorageError(f"{path}: no queue database here")
    uri = f"file:{path}?mode=ro"
    try:
        with sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000) as conn:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        conn.close()
    except sqlite3.Error as error:
        raise StorageError(f"{path}: not a hubd queue this hubd can change ({error})") from None
    head = HEAD_REVISION
    if row is None or row[0] != head:
        found = row[0] if row else "none"
        raise StorageError(
            f"{path}: schema revision {found}, this hubd writes {head}: start the node with"
            " this hubd once (it upgrades the file), or use the hubd that wrote it"
        )


def open_reader(path: Path) -> AsyncEngine:
    """A read-only engine on an existing queue database (for `hubd queue` beside a node)."""
    if not path.exists():
        raise StorageError(f"{path}: no queue database here")
    engine = create_async_engine(f"sqlite+aiosqlite:///file:{path}?mode=ro&uri=true")
    event.listen(engine.sync_engine, "connect", _on_read_only_connect)
    return engine


def _on_read_only_connect(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.close()
