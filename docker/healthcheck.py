"""The image's HEALTHCHECK: is the node's listener (or the DNS server) answering?

smtp (the default): connects to HUBD_HEALTHCHECK_ADDRESS (default 127.0.0.1:2525, where the
image's default config listens), expects a 220 greeting and says QUIT.
dns (HUBD_HEALTHCHECK_PROTOCOL=dns, for `hubd dns-server`): sends one UDP query to the
address and expects a reply to it (any answer, NXDOMAIN included, shows the server is up).
Exit 0 when healthy, 1 when not, with one line saying why. Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import struct
import sys

TIMEOUT = 5.0


def parse_address(value: str) -> tuple[str, int]:
    """host:port, IPv6 in brackets ([::1]:2525)."""
    host, sep, port = value.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected host:port, got {value!r}")
    return host.removeprefix("[").removesuffix("]"), int(port)


def check_smtp(host: str, port: int) -> str:
    """The greeting's first line; raises OSError or ValueError when there is no 220."""
    with socket.create_connection((host, port), timeout=TIMEOUT) as conn:
        conn.settimeout(TIMEOUT)
        greeting = b""
        while b"\n" not in greeting and len(greeting) < 1024:
            chunk = conn.recv(1024)
            if not chunk:
                break
            greeting += chunk
        line = greeting.split(b"\r\n")[0].decode("ascii", "replace")
        if not line.startswith("220"):
            raise ValueError(f"greeting {line!r}, expected 220")
        with contextlib.suppress(OSError):  # the greeting is what counts
            conn.sendall(b"QUIT\r\n")
    return line


def check_dns(host: str, port: int) -> str:
    """Sends an A query for health.hubd.test; raises OSError or ValueError without a reply."""
    query_id = secrets.randbelow(0x10000)
    header = struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0)  # RD, one question
    name = b"".join(bytes([len(label)]) + label for label in (b"health", b"hubd", b"test"))
    question = name + b"\0" + struct.pack("!HH", 1, 1)  # A, IN
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect((host, port))
        sock.send(header + question)
        reply = sock.recv(512)
    if len(reply) < 12:
        raise ValueError("short DNS reply")
    reply_id, flags = struct.unpack("!HH", reply[:4])
    if reply_id != query_id or not flags & 0x8000:
        raise ValueError("not a reply to the query")
    return f"DNS reply, rcode {flags & 0xF}"


def main() -> int:
    protocol = os.environ.get("HUBD_HEALTHCHECK_PROTOCOL", "smtp").strip().lower()
    address = os.environ.get("HUBD_HEALTHCHECK_ADDRESS", "127.0.0.1:2525")
    checks = {"smtp": check_smtp, "dns": check_dns}
    try:
        if protocol not in checks:
            raise ValueError(f"HUBD_HEALTHCHECK_PROTOCOL: expected smtp or dns, got {protocol!r}")
        answer = checks[protocol](*parse_address(address))
    except (OSError, ValueError) as error:
        print(f"unhealthy: {protocol} {address}: {error}")
        return 1
    print(f"healthy: {protocol} {address}: {answer}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
