"""The admin API's bearer token: made once, kept in a file only its owner can read.

Owns: creating the token file (mode 0600, never overwritten) at a node's first start, and
reading it (the node, and the CLI on the same host).
Public: ensure_token(), read_token(), TOKEN_MODE.
Failures: OSError when the file cannot be made or read; ValueError when it is empty.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

log = logging.getLogger(__name__)

TOKEN_MODE = 0o600


def read_token(path: Path) -> str:
    """The token in `path`."""
    token = path.read_text(encoding="ascii").strip()
    if not token:
        raise ValueError(f"{path} is empty: delete it and restart the node to make a new token")
    return token


def ensure_token(path: Path) -> str:
    """The token in `path`, made there (random, mode 0600) when there is none yet."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, TOKEN_MODE)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.warning("%s can be read by others (mode %o): chmod 600 it", path, mode)
        return read_token(path)
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(token + "\n")
    log.info("made the admin API token in %s", path)
    return token
