"""Whether an SMTP server answers at an address: its 220 greeting, read within a second.

Public: smtp_greets().
"""

from __future__ import annotations

import socket


def smtp_greets(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when a connection to host:port opens and the server's first line starts 220."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.settimeout(2 * timeout)
            return conn.recv(4).startswith(b"220")
    except OSError:
        return False
