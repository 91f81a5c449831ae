"""`hubd serve` refusing what it cannot run on: bad configuration, and queue files at start.

Bad configuration and a queue written by a newer hubd exit 2 with one line per problem and no
traceback; a queue file that is garbage is moved aside and the node starts on a fresh queue.
"""

from __future__ import annotations

import asyncio
import random
import smtplib
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from hubd.testing import (
    NodeProcess,
    free_loopback_address,
    maildir_messages,
    wait_until,
    write_config,
)
from storage import open_database
from tests.conftest import merge, node_settings

pytestmark = pytest.mark.integration

RUN_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return self.stderr.splitlines()


def serve(config: Path, cwd: Path) -> Run:
    """Run `python -m hubd serve -c config` to its exit (it must exit by itself)."""
    done = subprocess.run(
        [sys.executable, "-m", "hubd", "serve", "-c", str(config)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    return Run(done.returncode, done.stdout, done.stderr)


VALID_HEAD = """\
local_domains = ["corp.test"]

[node]
name = "cfg"
data_dir = "var/cfg"
"""

BAD_CONFIGS = [
    pytest.param(
        VALID_HEAD + '\n[smtp]\nlisten = ["127.0.0.1:2525"]\nmax_sessions = = 3\n',
        [["not valid TOML", "line 9"]],
        id="invalid-toml",
    ),
    pytest.param(
        VALID_HEAD + '\n[smtp]\nlisten = ["127.0.0.1:2525"]\nlisten_adress = "127.0.0.1:25"\n',
        [["smtp.listen_adress: unknown key"]],
        id="unknown-key",
    ),
    pytest.param(
        VALID_HEAD + '\n[smtp]\nlisten = [2525]\n\n[delivery]\nconcurrency_per_hop = "ten"\n',
        [["smtp.listen[0]: ", "host:port", "2525"], ["delivery.concurrency_per_hop: ", "integer"]],
        id="wrong-types",
    ),
]


class TestBadConfig:
    @pytest.mark.parametrize(("text", "expected"), BAD_CONFIGS)
    def test_exit_2_one_line_per_problem(
        self, tmp_path: Path, text: str, expected: list[list[str]]
    ) -> None:
        """A bad hubd.toml exits 2 with one stderr line per problem naming its key, no traceback."""
        config = tmp_path / "bad.toml"
        config.write_text(text, encoding="utf-8")
        run = serve(config, tmp_path)
        assert run.code == 2, run
        assert "Traceback" not in run.stderr
        assert len(run.lines) == len(expected), run.lines
        for line in run.lines:
            assert line.startswith(f"hubd: {config}: "), line
        for parts in expected:  # the first part names the problem; its line has all the parts
            (line,) = [line for line in run.lines if parts[0] in line]
            for part in parts:
                assert part in line, line
        assert not (tmp_path / "var").exists(), "nothing is created for a config that is refused"

    def test_missing_file(self, tmp_path: Path) -> None:
        """A configuration file that does not exist exits 2 with one line saying so."""
        config = tmp_path / "missing.toml"
        run = serve(config, tmp_path)
        assert run.code == 2, run
        assert "Traceback" not in run.stderr
        assert run.lines == [f"hubd: {config}: file not found"]


async def _make_queue(path: Path) -> None:
    database = await open_database(path)
    await database.close()


def _queue_settings(tmp_path: Path) -> tuple[Path, Path, tuple[str, int]]:
    host, port = free_loopback_address()
    data_dir = tmp_path / "node"
    settings = merge(node_settings(data_dir, "q", host, port), {"local_domains": ["corp.test"]})
    return write_config(tmp_path / "hubd.toml", settings), data_dir, (host, port)


class TestQueueFileAtStart:
    def test_schema_too_new(self, tmp_path: Path) -> None:
        """A queue.db with a schema_version newer than this hubd makes serve exit 2, in one line."""
        config, data_dir, _ = _queue_settings(tmp_path)
        database = data_dir / "queue.db"
        asyncio.run(_make_queue(database))
        with sqlite3.connect(database) as conn:
            conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
        conn.close()
        before = database.read_bytes()

        run = serve(config, tmp_path)

        assert run.code == 2, run
        assert "Traceback" not in run.stderr
        assert len(run.lines) == 1, run.lines
        assert run.lines[0].startswith("hubd: queue database: ")
        assert "schema version 99" in run.lines[0]
        assert "upgrade hubd" in run.lines[0]
        assert database.read_bytes() == before, "a newer queue is never touched"
        assert not list(data_dir.glob("queue.db.corrupt-*"))

    def test_garbage_is_moved_aside(self, tmp_path: Path) -> None:
        """A queue.db of garbage is moved to queue.db.corrupt-*, and a fresh queue takes mail."""
        config, data_dir, relay = _queue_settings(tmp_path)
        data_dir.mkdir(parents=True)
        garbage = random.Random(7).randbytes(64 * 1024)
        (data_dir / "queue.db").write_bytes(garbage)
        node = NodeProcess(config, relay, tmp_path / "node.log")

        node.start()
        try:
            (moved,) = data_dir.glob("queue.db.corrupt-*")
            assert moved.read_bytes() == garbage
            with smtplib.SMTP(*relay, local_hostname="client.test", timeout=10) as client:
                refused = client.sendmail(
                    "a@outside.test", ["bob@corp.test"], b"Subject: fresh\r\n\r\nhello\r\n"
                )
            assert refused == {}
            mailbox = data_dir / "mailboxes" / "corp.test" / "bob"
            # The fresh queue works end to end: the message is delivered from it.
            wait_until(lambda: maildir_messages(mailbox), 15, "delivery from the fresh queue")
            assert node.terminate() == 0
        finally:
            node.kill()

        log = (tmp_path / "node.log").read_text(encoding="utf-8")
        assert "failed its integrity check" in log
        assert moved.name in log
        with sqlite3.connect(f"file:{data_dir / 'queue.db'}?mode=ro", uri=True) as conn:
            version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        conn.close()
        assert version is not None
