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


def _send(address: tuple[str, int], recipient: str) -> str:
    import smtplib

    with smtplib.SMTP(*address, local_hostname="client.test", timeout=10) as client:
        client.ehlo()
        client.mail("alice@outside.test")
        client.rcpt(recipient)
        code, reply = client.data(b"Subject: q\r\nMessage-ID: <q@outside.test>\r\n\r\nq\r\n")
    assert code == 250
    return reply.decode().split()[1]


async def _stuck_message(start_node: NodeFactory, tmp_path: Path) -> tuple[Path, str]:
    """A node whose only next hop is dead, holding one message; its config and queue id."""
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
    return config, queue_id


class TestQueueCommands:
    async def test_list_and_show_a_deferred_message(
        self, start_node: NodeFactory, tmp_path: Path
    ) -> None:
        """A message held for a dead next hop shows with its state, next hop and last error."""
        config, queue_id = await _stuck_message(start_node, tmp_path)

        def attempted() -> Any:
            listing = json.loads(_hubd("queue", "list", "-c", str(config), "--json").stdout)
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
        missing = _hubd("queue", "show", "-c", str(config), "NOSUCHID")
        assert missing.returncode == 1
        assert "no message NOSUCHID" in missing.stderr


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
            listing = json.loads(_hubd("queue", "list", "-c", str(config), "--json").stdout)
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
        """An operator suspends, resumes, retries and removes a message beside the running node."""
        config, queue_id = await _stuck_message(start_node, tmp_path)

        def state() -> tuple[str, int] | None:
            listing = json.loads(_hubd("queue", "list", "-c", str(config), "--json").stdout)
            if not listing:
                return None
            recipient = listing[0]["recipients"][0]
            return recipient["state"], recipient["attempts"]

        await asyncio.to_thread(wait_until, lambda: state() == ("PENDING", 1), 15, "one attempt")
        assert _hubd("queue", "suspend", "-c", str(config), queue_id).returncode == 0
        assert state() == ("HELD", 1)
        assert _hubd("queue", "resume", "-c", str(config), queue_id).returncode == 0
        # Resumed means due now: the running node tries it again (a second failed attempt).
        await asyncio.to_thread(wait_until, lambda: state() == ("PENDING", 2), 45, "a retry")
        assert _hubd("queue", "retry", "-c", str(config), queue_id).returncode == 0
        removed = _hubd("queue", "remove", "-c", str(config), queue_id)
        assert removed.returncode == 0
        assert state() is None
        missing = _hubd("queue", "remove", "-c", str(config), queue_id)
        assert missing.returncode == 1
