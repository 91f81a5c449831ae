"""Bringing a queue file's schema up to this hubd's, inside the caller's transaction.

Owns: which Alembic revision a file is at (a file from before Alembic is revision 0001),
upgrading it to head, and stamping a new file.
Public: upgrade(), stamp_new(), head_revision().
Failures: SchemaTooNew when the file is at a revision this hubd does not know.
Limits: forward only; the incarnation id (meta table) is never touched, or every peer
would take the node for a new one and resubmit everything.
See also: storage/migrations/versions/, storage/database.py (the caller).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from storage.errors import SchemaTooNew

_BASELINE = "0001"  # the schema hubd created before it had migrations


def _config(conn: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    config.attributes["connection"] = conn
    return config


def _head(config: Config) -> str:
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def head_revision() -> str:
    """The newest schema revision this hubd knows."""
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    return _head(config)


def upgrade(conn: Connection) -> bool:
    """Upgrade an existing queue to the newest revision; True when anything ran."""
    config = _config(conn)
    current = MigrationContext.configure(conn).get_current_revision()
    known = {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}
    if current is not None and current not in known:
        raise SchemaTooNew(
            f"queue database is at schema revision {current}, newer than this hubd knows;"
            " upgrade hubd, or point node.data_dir at another directory"
        )
    if current is None:
        command.stamp(config, _BASELINE)
        current = _BASELINE
    if current == _head(config):
        return False
    command.upgrade(config, "head")
    return True


def stamp_new(conn: Connection) -> None:
    """Mark a queue just created from the current schema as being at the newest revision."""
    command.stamp(_config(conn), "head")
