"""A node whose queue's filesystem fills while clients send (a small tmpfs mounted as root).

Back pressure goes High and refuses at MAIL with 452 4.3.1; with every threshold at zero,
a disk filled to the last byte still never gets a 250 for what was not stored; in both, the
node comes back by itself when space is freed, and every message that got its 250 is
queued intact.
"""

from __future__ import annotations

import errno
import json
import os
import smtplib
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hubd import replies
from hubd.testing import (
    NodeProcess,
    free_loopback_address,
    maildir_messages,
    wait_until,
    write_config,
)
from tests.conftest import merge, node_settings

pytestmark = pytest.mark.integration

BUSY = replies.INSUFFICIENT_RESOURCES
REFUSALS = {(BUSY.code, BUSY.enhanced), (451, "4.3.0")}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 48 MiB tmpfs of the test's own, unmounted at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where = tmp_path / "disk"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m,mode=0755", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _free(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def _ballast(path: Path, leave: int) -> Path:
    """A file that takes all the free space of `path`'s filesystem but `leave` bytes
    (with leave=0: to the last byte, down to single bytes)."""
    ballast = path / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for chunk in (1 << 20, 1 << 12, 1):
            block = b"\0" * chunk
            while _free(path) - chunk >= leave:
                try:
                    os.write(fd, block)
                except OSError as error:
                    if error.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return ballast


def _node(tmp_path: Path, disk: Path, **overrides: Any) -> NodeProcess:
    host, port = free_loopback_address()
    settings = merge(
        node_settings(disk / "node", "full", host, port),
        {
            # Mail for far.test waits behind a next hop that refuses: the queue only grows.
            "routes": [{"domains": ["far.test"], "next_hops": ["127.0.0.1:9"]}],
            "smtp": {"spool_threshold": "32KiB"},
            **overrides,
        },
    )
    config = write_config(tmp_path / "hubd.toml", settings)
    return NodeProcess(config, (host, port), tmp_path / "node.log")


def _send(relay: tuple[str, int], tag: str, count: int, size: int) -> dict[str, tuple[int, str]]:
    """Send `count` messages on one connection; each Message-ID's final reply (code,
    enhanced code), whether refused at MAIL, RCPT or the end of DATA."""
    outcomes: dict[str, tuple[int, str]] = {}
    body = ("x" * 76 + "\r\n") * (size // 78)
    with smtplib.SMTP(*relay, local_hostname="client.test", timeout=30) as client:
        client.ehlo()
        for n in range(count):
            message_id = f"<{tag}-{n}@outside.test>"
            outcomes[message_id] = _one(client, message_id, body)
    return outcomes


def _one(client: smtplib.SMTP, message_id: str, body: str) -> tuple[int, str]:
    code, text = client.mail("alice@outside.test")
    if code == 250:
        code, text = client.rcpt("bob@far.test")
    if code == 250:
        code, text = client.data(f"Message-ID: {message_id}\r\nSubject: fill\r\n\r\n{body}")
    else:
        client.rset()
    return code, text.decode().split(" ", 1)[0] if code != 250 else ""


def _queued_ids(database: Path) -> set[str]:
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)
    try:
        return {row[0] for row in conn.execute("SELECT message_id FROM messages")}
    finally:
        conn.close()


def _integrity(database: Path) -> str:
    conn = sqlite3.connect(database, timeout=10)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def _pressure_events(data_dir: Path) -> list[dict[str, Any]]:
    events = []
    for path in sorted((data_dir / "tracking").glob("*.jsonl")):
        for line in path.read_text(errors="replace").splitlines():
            if '"PRESSURE"' in line:
                events.append(json.loads(line))
    return events


def _check_outcomes(outcomes: dict[str, tuple[int, str]], queued: set[str]) -> None:
    """Every 250 was stored; everything else was a 452 4.3.1 or a 451 4.3.0, never lost
    in between (a refusal whose message is queued anyway is no loss either)."""
    for message_id, (code, enhanced) in outcomes.items():
        if code == 250:
            assert message_id in queued, f"{message_id} got 250 but is not queued"
        else:
            assert (code, enhanced) in REFUSALS, (message_id, code, enhanced)


def test_high_refuses_and_recovers(tmp_path: Path, small_disk: Path) -> None:
    """Clients fill the queue's disk past disk_free_high: the supervisor's level goes High,
    every process refuses at MAIL with 452 4.3.1, nothing accepted is lost, and freeing
    the space brings Normal and 250s back."""
    node = _node(
        tmp_path,
        small_disk,
        node={"processes": 2},
        backpressure={"disk_free_medium": "20MiB", "disk_free_high": "16MiB"},
    )
    # 8 MiB to go to High, then 16 MiB more the clients cannot fill in the second
    # it may take the supervisor to see it.
    ballast = _ballast(small_disk, leave=24 << 20)
    node.start()
    try:
        outcomes: dict[str, tuple[int, str]] = {}
        for batch in range(60):  # at most 60 x 20 x 24 KB = 29 MB: more than the disk holds
            outcomes |= _send(node.relay, f"fill{batch}", 20, 24_000)
            if any(code == BUSY.code for code, _ in outcomes.values()):
                break
        data_dir = small_disk / "node"
        wait_until(
            lambda: any(e["level"] == "High" for e in _pressure_events(data_dir)),
            10,
            "a PRESSURE event for High",
        )
        with smtplib.SMTP(*node.relay, local_hostname="client.test", timeout=30) as client:
            client.ehlo()
            code, text = client.mail("alice@outside.test")
        assert (code, text.decode()) == (BUSY.code, f"{BUSY.enhanced} {BUSY.text}")
        _check_outcomes(outcomes, _queued_ids(data_dir / "queue.db"))
        accepted = {m for m, (code, _) in outcomes.items() if code == 250}
        assert accepted, "some mail was taken before the disk filled"

        ballast.unlink()
        wait_until(
            lambda: _pressure_events(data_dir)[-1]["level"] == "Normal",
            10,
            "a PRESSURE event back to Normal",
        )
        after = _send(node.relay, "after", 5, 2_000)
        assert all(code == 250 for code, _ in after.values()), after
        queued = _queued_ids(data_dir / "queue.db")
        assert accepted | set(after) <= queued
        log = node.log.read_text()
        assert "back pressure: disk_free" in log
        assert "Traceback" not in log
        assert node.terminate() == 0
        assert _integrity(data_dir / "queue.db") == "ok"
    finally:
        node.kill()


@pytest.mark.parametrize("processes", [1, 2])
def test_full_to_the_last_byte_with_thresholds_off(
    tmp_path: Path, small_disk: Path, processes: int
) -> None:
    """With back pressure off, a disk filled to the last byte under a sending client gets
    452 4.3.1 (or 451), never a 250 for what was not stored, small or spooled; the node (of
    one process, or a supervisor and its children) takes mail again by itself once the
    space is back."""
    node = _node(
        tmp_path,
        small_disk,
        node={"processes": processes},
        backpressure={key: 0 for key in ("disk_free_medium", "disk_free_high")},
    )
    node.start()
    try:
        data_dir = small_disk / "node"
        before = _send(node.relay, "before", 5, 2_000)
        assert all(code == 250 for code, _ in before.values())
        ballast = _ballast(small_disk, leave=0)
        outcomes = _send(node.relay, "small", 20, 2_000) | _send(node.relay, "big", 10, 80_000)
        _check_outcomes(outcomes | before, _queued_ids(data_dir / "queue.db"))
        assert any(code == BUSY.code for code, _ in outcomes.values()), outcomes

        ballast.unlink()
        after = _send(node.relay, "after", 5, 2_000) | _send(node.relay, "after-big", 2, 80_000)
        assert all(code == 250 for code, _ in after.values()), after
        queued = _queued_ids(data_dir / "queue.db")
        accepted = {m for m, (code, _) in (outcomes | before).items() if code == 250}
        assert accepted | set(after) <= queued
        assert "Traceback" not in node.log.read_text()
        assert node.terminate() == 0
        assert _integrity(data_dir / "queue.db") == "ok"
    finally:
        node.kill()


def test_maildir_full_is_no_attempt_and_retried_soon(tmp_path: Path, small_disk: Path) -> None:
    """Local deliveries into a full mailbox filesystem wait without using up attempts, and
    are all delivered within 10 s of the space coming back."""
    host, port = free_loopback_address()
    settings = merge(
        node_settings(tmp_path / "node", "boxes", host, port),
        {"local_domains": ["corp.test"], "mailboxes": {"dir": str(small_disk / "boxes")}},
    )
    node = NodeProcess(
        write_config(tmp_path / "hubd.toml", settings), (host, port), tmp_path / "log"
    )
    node.start()
    try:
        ballast = _ballast(small_disk, leave=0)
        with smtplib.SMTP(host, port, local_hostname="client.test", timeout=30) as client:
            for n in range(5):
                client.sendmail(
                    "alice@outside.test", [f"u{n}@corp.test"], f"Subject: {n}\r\n\r\nx\r\n"
                )
        database = tmp_path / "node" / "queue.db"

        def deferred_for_space() -> bool:
            conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)
            try:
                rows = conn.execute("SELECT attempts, last_error FROM recipients").fetchall()
            finally:
                conn.close()
            return len(rows) == 5 and all("No space left" in error for _, error in rows)

        wait_until(deferred_for_space, 15, "every delivery deferred for lack of space")
        conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)
        try:
            attempts = {row[0] for row in conn.execute("SELECT attempts FROM recipients")}
        finally:
            conn.close()
        assert attempts == {0}
        ballast.unlink()
        wait_until(
            lambda: len(maildir_messages(small_disk / "boxes")) == 5,
            10,
            "all 5 delivered within 10 s of space returning",
        )
    finally:
        node.kill()
