"""Plain sqlite3 under SQLAlchemy: the hot path's way of talking to the queue file.

Owns: reaching the sqlite3 connection under a SQLAlchemy one, and passing a list of ids as
one statement parameter (so each statement's text, and its prepared form, stays the same).
Public: driver(), ids_param(), IN_IDS.
See also: storage/enqueue.py, storage/claim.py, storage/outcomes.py, storage/settle.py.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection

from sqlalchemy.engine import Connection

# `column IN_IDS` with ids_param(...) as its parameter.
IN_IDS = "IN (SELECT value FROM json_each(?))"


def driver(conn: Connection) -> sqlite3.Connection:
    """The sqlite3 connection under a SQLAlchemy one, inside the transaction it began.

    SQLAlchemy Core spends more time building a statement than SQLite spends running it, so
    the per-message statements are plain SQL; SQLAlchemy still owns the schema and the
    transaction.
    """
    raw = conn.connection.driver_connection
    assert isinstance(raw, sqlite3.Connection)
    return raw


def ids_param(ids: Collection[int] | Collection[str]) -> str:
    """A list of ids as one statement parameter (read back with json_each)."""
    return json.dumps(sorted(ids))
