"""The node's operator log: stderr, one line per event, quiet libraries.

Owns: the logging set-up every process of a node shares (a child's lines carry its name).
Public: configure().
"""

from __future__ import annotations

import logging
import sys


def configure(level: int = logging.INFO, process: str = "") -> None:
    """Log at `level` to stderr; `process` names a node's child process in every line."""
    name = f"{process} " if process else ""
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s %(levelname)s {name}%(name)s: %(message)s",
        stream=sys.stderr,
    )
    quiet = logging.DEBUG if level <= logging.DEBUG else logging.WARNING
    # aiosmtpd logs every command at INFO, alembic every step of a migration check: debugging
    # aids, not an operator's log (and aiosmtpd's costs a node a fifth of its CPU).
    for library in ("mail.log", "alembic"):
        logging.getLogger(library).setLevel(quiet)
