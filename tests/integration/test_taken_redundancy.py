"""XQTAKEN and redundancy: the next hop keeps its copy until ours has left, then we lose a disk.

A routes corp.test to [B], B to [C], C to [D]; D (the mailstore) is down, so C holds the
mail, B its shadows, and A none (B's notice came when C took the message). C is killed long
enough for B to declare it dead and resubmit; C returns with its queue. B tells it which
ids it took over (XQTAKEN) only once its resubmitted copies have left B (here: handed to C
again, under new shadows), so C drops its old copies while the new ones are on two disks.
Then one disk loss, B's, loses nothing. (Before the fix XQTAKEN went at once, and B's queue
held the only copy until its retry.)
"""

from __future__ import annotations

import contextlib
import shutil
import smtplib
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
NAMES = ("a", "b", "c", "d")


class Line:
    """A -> B -> C -> D for corp.test, as node processes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.addresses = {name: free_loopback_address() for name in NAMES}
        self.nodes: dict[str, NodeProcess] = {}
        self._write("d", {"local_domains": ["corp.test"]})
        for name, after in (("c", "d"), ("b", "c"), ("a", "b")):
            route = {"routes": [{"domains": ["corp.test"], "next_hops": [self.hop(after)]}]}
            # B's copies, deferred while C is dead, wait 30 s (the default's first retry is
            # 1 m): an XQTAKEN sent before they leave would leave one disk holding them.
            retry = {"queue": {"retry": ["30s"]}} if name == "b" else {}
            self._write(name, route | retry)

    def hop(self, name: str) -> str:
        return "{}:{}".format(*self.addresses[name])

    def _write(self, name: str, overrides: dict[str, Any]) -> None:
        host, port = self.addresses[name]
        settings = merge(node_settings(self.root / name, name, host, port), overrides)
        config = write_config(self.root / f"{name}.toml", settings)
        self.nodes[name] = NodeProcess(config, (host, port), self.root / f"{name}.log")

    def events(self, name: str, event: str) -> int:
        tracking = self.root / name / "tracking"
        found = read_events(tracking) if tracking.exists() else []
        return sum(1 for e in found if e["event"] == event)

    def delivered(self) -> Counter[bytes]:
        box = self.root / "d" / "mailboxes" / "corp.test" / "bob"
        return Counter(
            line
            for data in maildir_messages(box).values()
            for line in data.split(b"\r\n")
            if line.startswith(b"Message-ID:")
        )


class TestTakenBeforeOurCopyLeft:
    def test_one_disk_loss_after_a_take_over_loses_nothing(self, tmp_path: Path) -> None:
        """After C's copies are taken over, losing B's disk still loses no message."""
        line = Line(tmp_path)
        nodes = line.nodes
        try:
            for name in ("c", "b", "a"):
                nodes[name].start()
            with smtplib.SMTP(*line.addresses["a"], local_hostname="client.test") as client:
                for n in range(COUNT):
                    data = f"Message-ID: <taken-{n}@client.test>\r\n\r\n{n}\r\n".encode()
                    client.sendmail("alice@client.test", ["bob@corp.test"], data)
            wait_until(lambda: line.events("a", "DISCARD") >= COUNT, 30, "A's shadows gone")
            wait_until(lambda: line.events("b", "SHADOW") >= COUNT, 30, "B's shadows of C")

            nodes["c"].kill()
            wait_until(lambda: line.events("b", "RESUBMIT") >= COUNT, 30, "B to take over")
            nodes["c"].start()
            # C drops its old copies only after B's resubmitted ones reached it again.
            wait_until(lambda: line.events("c", "DUPLICATE") >= COUNT, 60, "C to drop copies")
            assert line.events("b", "SHADOW") >= 2 * COUNT

            nodes["b"].kill()
            shutil.rmtree(tmp_path / "b")  # one disk lost
            nodes["b"].start()
            nodes["d"].start()
            with contextlib.suppress(TimeoutError):
                wait_until(lambda: len(line.delivered()) >= COUNT, 30, "every message at D")
            delivered = line.delivered()
            assert len(delivered) == COUNT, f"lost {COUNT - len(delivered)} of {COUNT}"
            assert set(delivered.values()) == {1}
        finally:
            for node in nodes.values():
                node.kill()
