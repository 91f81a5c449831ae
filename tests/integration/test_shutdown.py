"""Stopping a node: SIGTERM drains and exits 0, keeps queued mail, and tells idle clients 421."""

from __future__ import annotations

import asyncio
import signal
import smtplib
import socket
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP

from hubd.testing import NodeProcess, async_wait_until, free_loopback_address, write_config
from tests.conftest import NodeFactory, merge, node_settings

pytestmark = pytest.mark.integration

GRACE_SECONDS = 10.0  # Node.stop()'s default, which `hubd serve` uses on SIGTERM
REMOTE = "remote.test"
SENDER = "alice@outside.test"


@dataclass(frozen=True, slots=True)
class QueuedRow:
    queue_id: str
    message_id: str
    address: str
    state: str
    attempts: int
    last_error: str


def read_queue(database: Path) -> list[QueuedRow]:
    """Every recipient row in a node's queue, read through a read-only connection."""
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT m.queue_id, m.message_id, r.address, r.state, r.attempts, r.last_error"
            " FROM messages m JOIN recipients r ON r.message = m.id ORDER BY m.id, r.id"
        ).fetchall()
    finally:
        conn.close()
    return [QueuedRow(*row) for row in rows]


def _message(tag: str, recipient: str) -> bytes:
    return (
        f"From: <{SENDER}>\r\nTo: <{recipient}>\r\nSubject: {tag}\r\n"
        f"Message-ID: <{tag}@outside.test>\r\n\r\nbody of {tag}\r\n"
    ).encode()


def _send(address: tuple[str, int], recipient: str, tag: str) -> str:
    """Send one message; return the queue id from the 250 reply."""
    with smtplib.SMTP(*address, local_hostname="client.test", timeout=10) as client:
        client.ehlo()
        client.mail(SENDER)
        client.rcpt(recipient)
        code, reply = client.data(_message(tag, recipient))
    assert code == 250, reply
    text = reply.decode()
    enhanced, queue_id, word = text.split()
    assert (enhanced, word) == ("2.0.0", "queued"), text
    return queue_id


@dataclass(slots=True)
class Sink:
    """An aiosmtpd handler that keeps every message it is given."""

    received: list[tuple[str, list[str], bytes]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 2.0.0 Ok: kept"


def _node(tmp_path: Path, name: str, **overrides: Any) -> NodeProcess:
    host, port = free_loopback_address()
    settings = merge(node_settings(tmp_path / name, name, host, port), overrides)
    config = write_config(tmp_path / f"{name}.toml", settings)
    return NodeProcess(config, (host, port), tmp_path / f"{name}.log")


def _read_reply(reader: Any) -> list[bytes]:
    """The lines of one SMTP reply (a multi-line reply ends with "NNN ")."""
    lines = []
    while True:
        line = reader.readline()
        lines.append(line)
        if len(line) < 4 or line[3:4] != b"-":
            return lines


class TestSigtermWithQueuedMail:
    async def test_queued_mail_survives_and_is_delivered_once(self, tmp_path: Path) -> None:
        """SIGTERM with mail held for a dead hop exits 0 and keeps it; a restart sends each once."""
        hop_host, hop_port = free_loopback_address()  # nothing listens there until the sink does
        route = {"domains": [REMOTE], "next_hops": [f"{hop_host}:{hop_port}"]}
        node = _node(tmp_path, "edge", routes=[route])
        database = tmp_path / "edge" / "queue.db"
        await asyncio.to_thread(node.start)
        try:
            tags = [f"held-{n}" for n in range(5)]
            queue_ids = [
                await asyncio.to_thread(_send, node.relay, f"u{n}@{REMOTE}", tag)
                for n, tag in enumerate(tags)
            ]

            def all_deferred() -> bool:
                rows = read_queue(database)
                return len(rows) == len(tags) and all(row.attempts >= 1 for row in rows)

            await async_wait_until(all_deferred, 20, "a failed attempt for every message")
            for row in read_queue(database):
                assert row.last_error.startswith("451 4.4.1"), row

            started = time.monotonic()
            code = await asyncio.to_thread(node.terminate, GRACE_SECONDS + 20)
            stopped_in = time.monotonic() - started
            assert code == 0
            assert stopped_in < GRACE_SECONDS, f"SIGTERM took {stopped_in:.1f}s"

            held = read_queue(database)
            assert sorted(row.queue_id for row in held) == sorted(queue_ids)
            assert {row.state for row in held} == {"PENDING"}

            sink = Sink()
            loop = asyncio.get_running_loop()
            server = await loop.create_server(
                lambda: SMTP(sink, hostname="sink.test", ident="sink"), hop_host, hop_port
            )
            try:
                await asyncio.to_thread(node.start)
                await async_wait_until(
                    lambda: not read_queue(database), 30, "the restarted node to empty its queue"
                )
                assert await asyncio.to_thread(node.terminate, GRACE_SECONDS + 20) == 0
            finally:
                server.close()
                await server.wait_closed()
        finally:
            node.kill()

        delivered = Counter(
            data.split(b"Message-ID: <", 1)[1].split(b"@", 1)[0].decode()
            for _, _, data in sink.received
        )
        assert delivered == Counter(tags), "each held message exactly once"
        for sender, recipients, data in sink.received:
            tag = data.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0].decode()
            assert sender == SENDER
            assert recipients == [f"u{tags.index(tag)}@{REMOTE}"]
            assert data.endswith(_message(tag, recipients[0]))
            assert f"by edge.hubd.test (hubd) with ESMTP id {queue_ids[tags.index(tag)]}" in (
                data.decode()
            )


class TestSigtermWithIdleClients:
    def test_idle_sessions_get_421(self, tmp_path: Path) -> None:
        """SIGTERM while clients idle (after EHLO, mid-transaction) closes them with 421 4.3.2."""
        node = _node(tmp_path, "idle", local_domains=["corp.test"])
        node.start()
        try:
            with (
                socket.create_connection(node.relay, timeout=15) as after_ehlo,
                socket.create_connection(node.relay, timeout=15) as in_transaction,
            ):
                readers = [after_ehlo.makefile("rb"), in_transaction.makefile("rb")]
                for conn, reader in zip((after_ehlo, in_transaction), readers, strict=True):
                    assert _read_reply(reader)[-1].startswith(b"220 ")
                    conn.sendall(b"EHLO idle.test\r\n")
                    assert _read_reply(reader)[-1].startswith(b"250 ")
                in_transaction.sendall(b"MAIL FROM:<a@outside.test>\r\n")
                assert _read_reply(readers[1])[-1].startswith(b"250 ")
                in_transaction.sendall(b"RCPT TO:<bob@corp.test>\r\n")
                assert _read_reply(readers[1])[-1].startswith(b"250 ")

                assert node.process is not None
                node.process.send_signal(signal.SIGTERM)
                for reader in readers:
                    last = _read_reply(reader)[-1]
                    assert last.startswith(b"421 4.3.2 "), last
                    assert reader.readline() == b"", "the node closes the connection"
                    reader.close()
            assert node.process.wait(timeout=GRACE_SECONDS + 5) == 0
        finally:
            node.kill()
        assert read_queue(tmp_path / "idle" / "queue.db") == []


class TestStopRightAfterStart:
    async def test_stop_is_prompt(self, start_node: NodeFactory) -> None:
        """A node stopped the moment it started stops at once, not after the idle poll (30 s)."""
        node = await start_node("quick")
        started = time.monotonic()
        await node.stop(grace=GRACE_SECONDS)
        assert time.monotonic() - started < 5
