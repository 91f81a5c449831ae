"""A second `hubd serve` on a running node's data directory is refused and touches nothing.

Node A holds a message in delivery (its next hop accepts the connection and never greets,
so the recipient stays leased). A second `hubd serve` on the same data directory, listening
elsewhere, must exit at once with one line naming A's pid, and leave A's lease, crash count
and tracking log as they were. A lock left by a dead pid's children is waited for.
"""

from __future__ import annotations

import smtplib
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hubd.probe import smtp_greets
from hubd.testing import NodeProcess, free_loopback_address, wait_until, write_config
from hubd.tracking import read_events
from tests.conftest import merge, node_settings

pytestmark = pytest.mark.integration

REMOTE = "stalled.test"


@pytest.fixture
def tarpit() -> Iterator[str]:
    """A next hop that completes TCP connections (the kernel's backlog) and never greets."""
    host, _ = free_loopback_address()
    with socket.socket() as server:
        server.bind((host, 0))
        server.listen(16)
        yield f"{host}:{server.getsockname()[1]}"


def _config(tmp_path: Path, name: str, data_dir: Path, host: str, **extra: Any) -> Path:
    settings = merge(node_settings(data_dir, "hub-a", host), extra)
    return write_config(tmp_path / f"{name}.toml", settings)


def _leases(database: Path) -> list[tuple[str | None, int]]:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        return list(
            db.execute(
                "SELECT r.lease_owner, m.crashes FROM recipients r "
                "JOIN messages m ON m.id = r.message"
            )
        )


def _send(relay: tuple[str, int]) -> None:
    data = b"From: a@corp.test\r\nSubject: held\r\nMessage-ID: <held@corp.test>\r\n\r\nhi\r\n"
    with smtplib.SMTP(*relay, local_hostname="client.test", timeout=10) as client:
        client.sendmail("a@corp.test", [f"bob@{REMOTE}"], data)


class TestSecondNode:
    def test_refused_at_once_and_the_running_node_keeps_its_mail(
        self, tmp_path: Path, tarpit: str
    ) -> None:
        """The second node exits 1 naming A's pid; A's lease and crash count are untouched."""
        data_dir = tmp_path / "data"
        route = {"domains": [REMOTE], "next_hops": [tarpit]}
        slow = {"connect_timeout": "60s", "command_timeout": "60s"}
        host, port = free_loopback_address()
        config_a = _config(
            tmp_path,
            "a",
            data_dir,
            host,
            routes=[route],
            delivery=slow,
            smtp={"listen": [f"{host}:{port}"]},
        )
        node = NodeProcess(config_a, (host, port), tmp_path / "a.log")
        node.start()
        try:
            _send((host, port))
            database = data_dir / "queue.db"
            leased = wait_until(
                lambda: [row for row in _leases(database) if row[0] is not None],
                20,
                "A to lease the message to its stalled next hop",
            )
            other_host, _ = free_loopback_address()
            config_b = _config(tmp_path, "b", data_dir, other_host, routes=[route], delivery=slow)
            second = subprocess.run(
                [sys.executable, "-m", "hubd", "serve", "-c", str(config_b)],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            assert second.returncode == 1
            assert node.process is not None
            assert second.stderr.splitlines() == [
                f"hubd: data directory {data_dir} is in use by another node "
                f"(pid {node.process.pid})"
            ]
            assert _leases(database) == leased, "A's lease and crash count unchanged"
            events = [e["event"] for e in read_events(data_dir / "tracking")]
            assert "POISON" not in events
            listing = subprocess.run(
                [sys.executable, "-m", "hubd", "queue", "list", "-c", str(config_a)],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
            assert "HELD" not in listing.stdout
        finally:
            node.kill()


HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0)
os.write(fd, (sys.argv[2] + "\\n").encode())
print("locked", flush=True)
sys.stdin.readline()
"""


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


class TestLeftoverOfADeadNode:
    def test_waits_for_the_children_of_a_dead_pid(self, tmp_path: Path) -> None:
        """The lock file names a dead pid while a child still holds it: serve waits, then runs."""
        data_dir = tmp_path / "data"
        data_dir.mkdir()
        dead = _dead_pid()
        host, port = free_loopback_address()
        config = _config(tmp_path, "a", data_dir, host, smtp={"listen": [f"{host}:{port}"]})
        with subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(data_dir / "lock"), str(dead)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        ) as holder:
            assert holder.stdout is not None
            assert holder.stdin is not None
            assert holder.stdout.readline().strip() == "locked"
            with subprocess.Popen(
                [sys.executable, "-m", "hubd", "serve", "-c", str(config)],
                stderr=subprocess.PIPE,
                text=True,
            ) as node:
                try:
                    assert node.stderr is not None
                    first = node.stderr.readline()
                    assert f"locked by what is left of pid {dead}" in first, first
                    assert not smtp_greets(host, port)
                    holder.stdin.write("go\n")
                    holder.stdin.flush()
                    assert holder.wait(timeout=10) == 0
                    wait_until(lambda: smtp_greets(host, port), 20, "the node to start")
                    assert (data_dir / "lock").read_text().strip() == str(node.pid)
                finally:
                    node.kill()
