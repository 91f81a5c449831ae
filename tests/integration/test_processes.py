"""A node of several processes: acceptor and delivery children under one supervisor.

(Kills under load, aimed at each kind of process, are in test_crash_safety.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import smtplib
import socket
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

from hubd.config import load_config
from hubd.datadir import acquire_data_dir
from hubd.supervisor import Plan, Supervisor
from hubd.testing import (
    NodeProcess,
    free_loopback_address,
    group_alive,
    maildir_messages,
    wait_until,
    write_config,
)
from tests.conftest import merge, node_settings

pytestmark = pytest.mark.integration


def _settings(tmp_path: Path, **overrides: Any) -> tuple[Path, tuple[str, int]]:
    host, port = free_loopback_address()
    settings = merge(
        node_settings(tmp_path / "node", "split", host, port),
        {"local_domains": ["corp.test"], "node": {"processes": 2}, **overrides},
    )
    return write_config(tmp_path / "hubd.toml", settings), (host, port)


def _send(relay: tuple[str, int], count: int) -> None:
    with smtplib.SMTP(*relay, local_hostname="client.test", timeout=30) as client:
        for n in range(count):
            client.sendmail(
                "alice@outside.test",
                [f"user{n % 3}@corp.test"],
                f"Subject: split {n}\r\nMessage-ID: <split-{n}@outside.test>\r\n\r\nbody\r\n",
            )


class TestSplitNode:
    def test_relays_and_drains_on_sigterm(self, tmp_path: Path) -> None:
        """Mail taken by the acceptor is delivered by the delivery process; SIGTERM drains
        both and the supervisor exits 0 with no process of the node left."""
        config, relay = _settings(tmp_path)
        node = NodeProcess(config, relay, tmp_path / "node.log")
        node.start()
        try:
            assert set(node.children()) == {"acceptor-0", "delivery-0"}
            _send(relay, 20)
            boxes = tmp_path / "node" / "mailboxes"
            wait_until(lambda: len(maildir_messages(boxes)) == 20, 30, "20 messages delivered")
            assert node.process is not None
            pgid = node.process.pid
            assert node.terminate() == 0
            wait_until(lambda: not group_alive(pgid), 10, "every child gone")
        finally:
            node.kill()

    def test_a_child_killed_is_restarted(self, tmp_path: Path) -> None:
        """The supervisor replaces a child that dies, and the node goes on taking mail."""
        config, relay = _settings(tmp_path)
        node = NodeProcess(config, relay, tmp_path / "node.log")
        node.start()
        try:
            first = node.children()
            for name in ("acceptor-0", "delivery-0"):
                node.kill_child(name)
            wait_until(
                lambda: (
                    (now := node.children()).keys() == first.keys()
                    and not set(now.values()) & set(first.values())
                ),
                30,
                "both children replaced",
            )
            wait_until(node.greets, 30, "the new acceptor to greet")
            _send(relay, 5)
            boxes = tmp_path / "node" / "mailboxes"
            wait_until(lambda: len(maildir_messages(boxes)) == 5, 30, "5 messages delivered")
        finally:
            node.kill()

    def test_a_restarted_child_leaves_the_others_leases(self, tmp_path: Path) -> None:
        """Only the supervisor recovers leases: an acceptor that dies and comes back does
        not free (or count a crash for) what the delivery process is delivering."""
        hole = socket.create_server((free_loopback_address()[0], 0))  # never answers
        held: list[socket.socket] = []
        host, port = hole.getsockname()
        config, relay = _settings(
            tmp_path,
            routes=[{"domains": ["far.test"], "next_hops": [f"{host}:{port}"]}],
            delivery={"connect_timeout": "60s", "command_timeout": "60s"},
        )
        node = NodeProcess(config, relay, tmp_path / "node.log")
        node.start()
        try:
            with smtplib.SMTP(*relay, local_hostname="client.test", timeout=30) as client:
                client.sendmail("a@outside.test", ["b@far.test"], b"Subject: held\r\n\r\nx\r\n")
            held.append(hole.accept()[0])  # the delivery process connected: it holds a lease
            database = tmp_path / "node" / "queue.db"
            before = _lease(database)
            assert before[0]  # leased to the delivery process's run
            first = node.children()["acceptor-0"]
            node.kill_child("acceptor-0")
            wait_until(
                lambda: node.children().get("acceptor-0") not in (None, first),
                30,
                "the acceptor replaced",
            )
            wait_until(node.greets, 30, "the new acceptor to greet")
            assert _lease(database) == before
        finally:
            node.kill()
            for conn in held:
                conn.close()
            hole.close()


class TestNodeWideLimits:
    def test_two_acceptors_count_a_client_together(self, tmp_path: Path) -> None:
        """With two acceptor processes, a client's connections and messages are counted
        node-wide: past either limit it is refused, whichever acceptor takes it."""
        config, relay = _settings(
            tmp_path,
            node={"processes": 3},
            smtp={
                "trusted_networks": ["127.0.0.1/32"],
                "max_connections_per_client": 6,
                "max_messages_per_minute_per_client": 4,
            },
        )
        client_host = free_loopback_address()[0]
        node = NodeProcess(config, relay, tmp_path / "node.log")
        node.start()
        opened: list[smtplib.SMTP] = []
        try:
            acceptors = [pid for name, pid in node.children().items() if "acceptor" in name]
            assert len(acceptors) == 2
            for _ in range(6):
                client = smtplib.SMTP(timeout=30, source_address=(client_host, 0))
                client.connect(*relay)
                opened.append(client)
            taken = _acceptors_holding(acceptors, [c.sock.getsockname() for c in opened])
            if taken != set(acceptors):
                pytest.skip("the kernel gave all six connections to one acceptor this time")
            with pytest.raises(smtplib.SMTPConnectError) as refused:
                smtplib.SMTP(*relay, timeout=30, source_address=(client_host, 0))
            assert refused.value.smtp_code == 421
            sent = [_try_send(client, n) for n, client in enumerate(opened)]
            assert sent == [250] * 4 + [421] * 2
            boxes = tmp_path / "node" / "mailboxes"
            wait_until(lambda: len(maildir_messages(boxes)) == 4, 30, "the 4 messages delivered")
        finally:
            for client in opened:
                with contextlib.suppress(smtplib.SMTPException, OSError):
                    client.close()
            node.kill()


def _try_send(client: smtplib.SMTP, n: int) -> int:
    try:
        client.sendmail("a@outside.test", ["u@corp.test"], f"Subject: {n}\r\n\r\nx\r\n")
    except smtplib.SMTPSenderRefused as refused:
        return refused.smtp_code
    return 250


def _acceptors_holding(pids: list[int], clients: list[tuple[str, int]]) -> set[int]:
    """Which of the processes hold the server side of these client connections."""
    wanted = {f"{_hex_address(host, port)}" for host, port in clients}
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[2] in wanted:  # the remote end is one of our clients
            inodes.add(fields[9])
    holders = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    holders.add(pid)
    return holders


def _hex_address(host: str, port: int) -> str:
    packed = socket.inet_aton(host)
    return f"{int.from_bytes(packed, 'little'):08X}:{port:04X}"


def _lease(database: Path) -> tuple[str | None, int]:
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        row = conn.execute(
            "SELECT r.lease_owner, m.crashes FROM recipients r JOIN messages m ON m.id = r.message"
        ).fetchone()
    finally:
        conn.close()
    return row[0], row[1]


class TestStartUpFailure:
    async def test_a_child_that_fails_at_start_stops_the_node(self, tmp_path: Path) -> None:
        """A child that exits before it is ready stops the whole node with status 1."""
        config_path, _ = _settings(tmp_path)
        config = load_config(config_path)
        lock = acquire_data_dir(config.node.data_dir)
        failing = (sys.executable, "-c", "import sys; sys.exit(3)")
        supervisor = Supervisor(
            config, config_path, Plan(1, 1), lock_fd=lock.inheritable(), worker=failing
        )
        try:
            status = await asyncio.wait_for(supervisor.run(lambda _node: None), 60)
        finally:
            lock.release()
        assert status == 1
