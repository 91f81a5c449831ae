"""`hubd queue list` beside a node under load: 200 readings that never disturb it."""

from __future__ import annotations

import asyncio
import smtplib
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from hubd.queue_report import read_queue
from hubd.testing import (
    NodeProcess,
    free_loopback_address,
    maildir_messages,
    wait_until,
    write_config,
)
from tests.conftest import merge, node_settings

pytestmark = pytest.mark.integration

MESSAGES = 300
READS = 200


def _load(relay: tuple[str, int], replies: list[int], senders: int = 3) -> list[threading.Thread]:
    """Clients sending MESSAGES messages in all, each reply code appended to `replies`."""

    def send(first: int) -> None:
        with smtplib.SMTP(*relay, local_hostname="client.test", timeout=30) as client:
            client.ehlo()
            for n in range(first, MESSAGES, senders):
                head = f"Subject: load {n}\r\nMessage-ID: <load-{n}@outside.test>\r\n\r\n"
                client.mail("alice@outside.test")
                client.rcpt(f"u{n % 7}@corp.test")
                code, _ = client.data(head + "x" * 2000 + "\r\n")
                replies.append(code)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(senders)]
    for thread in threads:
        thread.start()
    return threads


def test_two_hundred_listings_under_load(tmp_path: Path) -> None:
    """While clients send and the node delivers, the queue is read 200 times (3 of them by
    the real command): every message gets its 250 and is delivered, and the node logs no
    error, quarantines nothing and goes on greeting."""
    host, port = free_loopback_address()
    settings = merge(
        node_settings(tmp_path / "node", "busy", host, port),
        {"local_domains": ["corp.test"], "node": {"processes": 2}},
    )
    config = write_config(tmp_path / "hubd.toml", settings)
    node = NodeProcess(config, (host, port), tmp_path / "node.log")
    node.start()
    database = tmp_path / "node" / "queue.db"
    try:
        replies: list[int] = []
        threads = _load((host, port), replies)
        commands = [
            subprocess.Popen(
                [sys.executable, "-m", "hubd", "queue", "list", "-c", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for _ in range(3)
        ]
        for _ in range(READS - len(commands)):
            asyncio.run(read_queue(database))
        for command in commands:
            _, err = command.communicate(timeout=60)
            assert command.returncode == 0, err
        for thread in threads:
            thread.join(timeout=120)
        assert replies == [250] * MESSAGES
        boxes = tmp_path / "node" / "mailboxes"
        wait_until(lambda: len(maildir_messages(boxes)) == MESSAGES, 60, "every message delivered")
        assert node.greets()
        log = node.log.read_text()
        for sign in ("ERROR", "Traceback", "locked", "corrupt"):
            assert sign not in log, sign
        assert not list(database.parent.glob("queue.db.corrupt-*"))
    finally:
        node.kill()
