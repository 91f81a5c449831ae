"""`hubd queue list/show` beside a running node, and poison messages held after crashes."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from hubd.node import Node
from hubd.testing import (
    NodeProcess,
    free_loopback_address,
    wait_until,
    write_config,
)
from hubd.tracking import read_events
from tests.conftest import NodeFactory, merge, node_settings

pytestmark = pytest.mark.integration


def _hubd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hubd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _json_lines(text: str) -> list[Any]:
    """What a --json command printed: one object per line."""
    return [json.loads(line) for line in text.splitlines()]


def _hubd_input(stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hubd", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _send(address: tuple[str, int], recipient: str) -> str:
    import smtplib

    with smtplib.SMTP(*address, local_hostname="client.test", timeout=10) as client:
        client.ehlo()
        client.mail("alice@outside.test")
        client.rcpt(recipient)
        code, reply = client.data(b"Subject: q\r\nMessage-ID: <q@outside.test>\r\n\r\nq\r\n")
    assert code == 250
    return reply.decode().split()[1]


async def _stuck_message(start_node: NodeFactory, tmp_path: Path) -> tuple[Path, str, Node]:
    """A node whose only next hop is dead, holding one message; its config, the queue id
    and the (in-process) node."""
    dead, _ = free_loopback_address()
    node = await start_node(
        "a",
        routes=[{"domains": ["corp.test"], "next_hops": [f"{dead}:2525"]}],
        queue={"retry": ["1h"]},
    )
    config = write_config(
        tmp_path / "a.toml", {"node": {"name": "a", "data_dir": str(node.config.node.data_dir)}}
    )
    address = node.relay_addresses[0]
    queue_id = await asyncio.to_thread(_send, (address.host, address.port), "bob@corp.test")
    return config, queue_id, node


class TestQueueCommands:
    async def test_list_and_show_a_deferred_message(
        self, start_node: NodeFactory, tmp_path: Path
    ) -> None:
        """A message held for a dead next hop shows with its state, next hop and last error."""
        config, queue_id, _ = await _stuck_message(start_node, tmp_path)

        def attempted() -> Any:
            listing = _json_lines(_hubd("queue", "list", "-c", str(config), "--json").stdout)
            return listing and listing[0]["recipients"][0]["attempts"] == 1 and listing

        (entry,) = await asyncio.to_thread(wait_until, attempted, 15, "one attempt")
        assert entry["queue_id"] == queue_id
        (recipient,) = entry["recipients"]
        assert recipient["address"] == "bob@corp.test"
        assert recipient["state"] == "PENDING"
        assert recipient["next_hop"] == "route:corp.test"
        assert recipient["last_error"].startswith("451 4.4.1")

        text = _hubd("queue", "list", "-c", str(config)).stdout
        assert queue_id in text
        assert "bob@corp.test" in text
        shown = _hubd("queue", "show", "-c", str(config), queue_id)
        assert shown.returncode == 0
        assert "last_error: 451 4.4.1" in shown.stdout
        assert "  RECEIVE  bob@corp.test" in shown.stdout
        missing = _hubd("queue", "show", "-c", str(config), "NOSUCHID")
        assert missing.returncode == 1
        assert "no message NOSUCHID" in missing.stderr
        (as_json,) = _json_lines(
            _hubd("queue", "show", "-c", str(config), queue_id, "--json").stdout
        )
        assert as_json["received_at"].endswith("Z")
        assert [e["event"] for e in as_json["history"]][:2] == ["RECEIVE", "DEFER"]
        assert "T" in as_json["received_at"]

        text = _hubd("queue", "show", "-c", str(config), queue_id, "--message").stdout
        assert "Message-ID: <q@outside.test>" in text
        assert text.startswith("Received: ")
        exported = tmp_path / "q.eml"
        done = _hubd("queue", "export", "-c", str(config), queue_id, "-o", str(exported))
        assert done.returncode == 0, done.stderr
        assert exported.read_text() == text
        again = _hubd("queue", "export", "-c", str(config), queue_id, "-o", str(exported))
        assert again.returncode == 1
        assert again.stderr.count("\n") == 1

        (hop,) = _json_lines(_hubd("queue", "shape", "-c", str(config), "--json").stdout)
        assert hop == {
            "next_hop": "route:corp.test",
            "total": 1,
            "ages": {**dict.fromkeys(hop["ages"], 0), "5m": 1},
        }
        assert "route:corp.test" in _hubd("queue", "shape", "-c", str(config)).stdout


class _SilentServer:
    """Accepts SMTP connections and never says a word: a delivery that hangs."""

    def __init__(self) -> None:
        self.host, _ = free_loopback_address()
        self._socket = socket.create_server((self.host, 0))
        self.port = self._socket.getsockname()[1]
        self.accepted = 0
        self._held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._socket.accept()
            except OSError:
                return
            self._held.append(conn)
            self.accepted += 1

    def close(self) -> None:
        self._socket.close()
        for conn in self._held:
            conn.close()


class TestPoison:
    def test_message_in_two_crashes_is_held(self, tmp_path: Path) -> None:
        """A message being delivered when the node is killed twice is held and logged POISON."""
        silent = _SilentServer()
        host, port = free_loopback_address()
        settings = merge(
            node_settings(tmp_path / "node", "node", host, port),
            {
                "routes": [
                    {"domains": ["corp.test"], "next_hops": [f"{silent.host}:{silent.port}"]}
                ],
                "delivery": {"command_timeout": "5m"},
            },
        )
        config = write_config(tmp_path / "node.toml", settings)
        node = NodeProcess(config, (host, port), tmp_path / "node.log")
        try:
            node.start()
            queue_id = _send((host, port), "bob@corp.test")
            for crash in (1, 2):
                wait_until(lambda n=crash: silent.accepted >= n, 15, f"delivery attempt {crash}")
                node.kill()
                node.start()
            listing = _json_lines(_hubd("queue", "list", "-c", str(config), "--json").stdout)
            (entry,) = listing
            assert entry["queue_id"] == queue_id
            assert entry["crashes"] == 2
            assert entry["recipients"][0]["state"] == "HELD"
            events = list(read_events(tmp_path / "node" / "tracking"))
            (poison,) = [e for e in events if e["event"] == "POISON"]
            assert poison["queue_id"] == queue_id
            assert silent.accepted == 2  # not tried again once held
        finally:
            node.kill()
            silent.close()


class TestQueueChanges:
    async def test_suspend_resume_retry_remove(
        self, start_node: NodeFactory, tmp_path: Path
    ) -> None:
        """An operator suspends, resumes, retries and removes a message of a stopped node,
        several ids at once and from stdin."""
        config, queue_id, node = await _stuck_message(start_node, tmp_path)
        data_dir = tmp_path / "a"

        def state() -> tuple[str, int] | None:
            listing = _json_lines(_hubd("queue", "list", "-c", str(config), "--json").stdout)
            if not listing:
                return None
            recipient = listing[0]["recipients"][0]
            return recipient["state"], recipient["attempts"]

        await asyncio.to_thread(wait_until, lambda: state() == ("PENDING", 1), 15, "one attempt")
        await node.stop(grace=5)
        suspended = _hubd("queue", "suspend", "-c", str(config), queue_id)
        assert suspended.returncode == 0, suspended.stderr
        assert suspended.stdout == f"{queue_id}: suspend (1 recipient(s))\n"
        assert state() == ("HELD", 1)
        resumed = _hubd_input(queue_id + "\n", "queue", "resume", "-c", str(config), "-")
        assert resumed.returncode == 0, resumed.stderr
        assert state() == ("PENDING", 1)
        both = _hubd("queue", "retry", "-c", str(config), queue_id, "NOSUCHID")
        assert both.returncode == 1
        assert "no message NOSUCHID" in both.stderr
        assert f"{queue_id}: retry (1 recipient(s))" in both.stdout
        removed = _hubd("queue", "remove", "-c", str(config), "--hop", "route:corp.test", "--json")
        assert removed.returncode == 0, removed.stderr
        assert _json_lines(removed.stdout) == [
            {"queue_id": queue_id, "action": "remove", "changed": 1}
        ]
        assert state() is None
        missing = _hubd("queue", "remove", "-c", str(config), queue_id)
        assert missing.returncode == 1
        assert not list(data_dir.glob("queue.db.corrupt-*"))

    def test_a_running_node_makes_the_change_itself(self, tmp_path: Path) -> None:
        """With `hubd serve` running, a change goes to the node (its admin socket), never
        to the file behind its back."""
        dead, _ = free_loopback_address()
        host, port = free_loopback_address()
        settings = merge(
            node_settings(tmp_path / "node", "run", host, port),
            {
                "routes": [{"domains": ["corp.test"], "next_hops": [f"{dead}:2525"]}],
                "queue": {"retry": ["1h"]},
            },
        )
        config = write_config(tmp_path / "hubd.toml", settings)
        node = NodeProcess(config, (host, port), tmp_path / "node.log")
        node.start()
        try:
            queue_id = _send((host, port), "bob@corp.test")
            suspended = _hubd("queue", "suspend", "-c", str(config), queue_id)
            assert suspended.returncode == 0, suspended.stderr
            assert f"admin API: suspend {queue_id}" in (tmp_path / "node.log").read_text()
            listing = _json_lines(_hubd("queue", "list", "-c", str(config), "--json").stdout)
            assert [m["queue_id"] for m in listing] == [queue_id]
            assert listing[0]["recipients"][0]["state"] == "HELD"
            removed = _hubd("queue", "remove", "-c", str(config), queue_id)
            assert removed.returncode == 0, removed.stderr
            assert f"admin API: remove {queue_id}" in (tmp_path / "node.log").read_text()
            assert _json_lines(_hubd("queue", "list", "-c", str(config), "--json").stdout) == []
        finally:
            node.kill()


class TestNothingCreated:
    @pytest.mark.parametrize(
        "command",
        [
            ["queue", "list"],
            ["queue", "list", "--shadows"],
            ["queue", "show", "X1"],
            ["queue", "retry", "X1"],
            ["queue", "suspend", "ALL"],
            ["queue", "remove", "--hop", "h"],
            ["queue", "flush"],
            ["queue", "redirect", "--to", "127.0.0.1:25", "ALL"],
        ],
        ids=" ".join,
    )
    def test_empty_directory_stays_empty(self, tmp_path: Path, command: list[str]) -> None:
        """A config whose data_dir is an empty directory (or none) gets one line and exit 1,
        and nothing is created there."""
        empty = tmp_path / "empty"
        empty.mkdir()
        for data_dir in (empty, tmp_path / "absent"):
            config = write_config(tmp_path / "hubd.toml", {"node": {"data_dir": str(data_dir)}})
            result = _hubd(*command, "-c", str(config))
            assert result.returncode == 1, result
            assert result.stderr.count("\n") == 1, result.stderr
            assert "no queue database here" in result.stderr
        assert list(empty.iterdir()) == []
        assert not (tmp_path / "absent").exists()

    def test_config_pointing_at_a_directory(self, tmp_path: Path) -> None:
        """`-c` naming a directory is a configuration error (exit 2) that creates nothing."""
        empty = tmp_path / "empty"
        empty.mkdir()
        result = _hubd("queue", "list", "-c", str(empty))
        assert result.returncode == 2
        assert list(empty.iterdir()) == []

    async def test_reads_of_a_stopped_queue_leave_it_as_it_was(
        self, start_node: NodeFactory, tmp_path: Path
    ) -> None:
        """Listing a stopped node's queue changes, moves or migrates no file in its directory
        (SQLite may leave an empty WAL and its index beside it, as any reader does)."""
        config, queue_id, node = await _stuck_message(start_node, tmp_path)
        await node.stop(grace=5)
        data_dir = tmp_path / "a"
        before = {p.name: p.stat().st_mtime_ns for p in data_dir.iterdir()}
        for command in (["list"], ["list", "--json"], ["show", queue_id]):
            assert _hubd("queue", *command, "-c", str(config)).returncode == 0
        after = {p.name: p.stat().st_mtime_ns for p in data_dir.iterdir()}
        sqlite_own = {"queue.db-wal", "queue.db-shm"}
        assert {k: v for k, v in after.items() if k not in sqlite_own} == before
        wal = data_dir / "queue.db-wal"
        assert not wal.exists() or wal.stat().st_size == 0
