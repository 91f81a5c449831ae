"""A kill of the shadow holder just after it learnt that its next hop lost its queue.

A routes corp.test to [B, C], B to [C]; C is down, so B holds the mail and A its shadows.
B is killed and wiped, and comes back with a new incarnation. A notes the new incarnation
and resubmits the old one's shadows; SIGKILL between those two steps is simulated by
writing the new incarnation into A's stopped queue, as the first commit would have. The
shadows must still go again, and every message reach C once.
"""

from __future__ import annotations

import shutil
import smtplib
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from hubd.testing import (
    NodeProcess,
    free_loopback_address,
    maildir_messages,
    wait_until,
    write_config,
)
from hubd.tracking import read_events
from tests.conftest import merge, node_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

COUNT = 5


def _incarnation(database: Path) -> str:
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        (value,) = conn.execute("SELECT value FROM meta WHERE key = 'incarnation'").fetchone()
    finally:
        conn.close()
    return str(value)


class TestKilledBetweenHelloAndResubmit:
    def test_shadows_of_the_lost_incarnation_go_again(self, tmp_path: Path) -> None:
        """A restarted holder resubmits shadows of a next hop's old incarnation at its hello."""
        addresses = {name: free_loopback_address() for name in ("a", "b", "c")}

        def hostport(name: str) -> str:
            return "{}:{}".format(*addresses[name])

        def node(name: str, overrides: dict[str, Any]) -> NodeProcess:
            host, port = addresses[name]
            settings = merge(node_settings(tmp_path / name, name, host, port), overrides)
            config = write_config(tmp_path / f"{name}.toml", settings)
            return NodeProcess(config, (host, port), tmp_path / f"{name}.log")

        c = node("c", {"local_domains": ["corp.test"]})
        b = node("b", {"routes": [{"domains": ["corp.test"], "next_hops": [hostport("c")]}]})
        a = node(
            "a",
            {"routes": [{"domains": ["corp.test"], "next_hops": [hostport("b"), hostport("c")]}]},
        )

        def events(name: str, event: str) -> int:
            tracking = tmp_path / name / "tracking"
            found = read_events(tracking) if tracking.exists() else []
            return sum(1 for e in found if e["event"] == event)

        try:
            b.start()
            a.start()
            with smtplib.SMTP(*addresses["a"], local_hostname="client.test", timeout=30) as s:
                for n in range(COUNT):
                    s.sendmail(
                        "alice@client.test",
                        ["bob@corp.test"],
                        f"Message-ID: <inc-{n}@client.test>\r\n\r\n{n}\r\n".encode(),
                    )
            wait_until(lambda: events("a", "SHADOW") >= COUNT, 30, "A's shadows")
            wait_until(lambda: events("b", "DEFER") >= COUNT, 30, "B to hold the mail")

            a.kill()
            b.kill()
            shutil.rmtree(tmp_path / "b")
            b.start()
            # What A's first commit at its next hello would have left behind it.
            conn = sqlite3.connect(tmp_path / "a" / "queue.db")
            with conn:
                conn.execute(
                    "UPDATE peers SET incarnation = ?, ack = 0 WHERE address = ?",
                    (_incarnation(tmp_path / "b" / "queue.db"), hostport("b")),
                )
            conn.close()
            a.start()
            c.start()

            box = tmp_path / "c" / "mailboxes" / "corp.test" / "bob"

            def delivered() -> Counter[bytes]:
                return Counter(
                    line
                    for data in maildir_messages(box).values()
                    for line in data.split(b"\r\n")
                    if line.startswith(b"Message-ID:")
                )

            wait_until(lambda: len(delivered()) >= COUNT, 30, "every message at C")
            assert set(delivered().values()) == {1}
            assert events("a", "RESUBMIT") >= COUNT
        finally:
            for process in (a, b, c):
                process.kill()
