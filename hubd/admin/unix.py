"""Reaching a unix socket whose path is longer than sun_path holds (107 bytes on Linux).

Owns: naming a socket in a deep directory through /proc/self/fd/<directory fd>, so a data
directory anywhere works for admin.sock, on the node's side (bind) and the CLI's (connect).
Public: reachable().
Limits: Linux only (as hubd is); the name is valid while the context is open.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

_SUN_PATH = 107  # bytes of a path in sockaddr_un, less the terminating NUL


@contextlib.contextmanager
def reachable(path: Path) -> Iterator[str]:
    """A name of the socket `path` short enough to bind or connect to."""
    if len(os.fsencode(path)) <= _SUN_PATH:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)
