"""Shadow redundancy across real node processes: a next hop dies, even with its disk."""

from __future__ import annotations

import json
import shutil
import smtplib
import subprocess
import sys
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

COUNT = 20


class Chain:
    """A -> B -> C for corp.test; A also routes directly to C as its second next hop."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.addresses = {name: free_loopback_address() for name in ("a", "b", "c")}
        self.nodes: dict[str, NodeProcess] = {}
        c = self.hostport("c")
        self._write("c", {"local_domains": ["corp.test"]})
        self._write("b", {"routes": [{"domains": ["corp.test"], "next_hops": [c]}]})
        self._write(
            "a",
            {"routes": [{"domains": ["corp.test"], "next_hops": [self.hostport("b"), c]}]},
        )

    def hostport(self, name: str) -> str:
        host, port = self.addresses[name]
        return f"{host}:{port}"

    def data_dir(self, name: str) -> Path:
        return self.root / name

    def _write(self, name: str, overrides: dict[str, Any]) -> None:
        host, port = self.addresses[name]
        # Nodes of an acceptor and a delivery process: shadows cross the process split.
        split = {"node": {"processes": 2}}
        settings = merge(
            merge(node_settings(self.data_dir(name), name, host, port), split), overrides
        )
        config = write_config(self.root / f"{name}.toml", settings)
        self.nodes[name] = NodeProcess(config, (host, port), self.root / f"{name}.log")

    def events(self, name: str, event: str) -> list[dict[str, Any]]:
        tracking = self.data_dir(name) / "tracking"
        return (
            [e for e in read_events(tracking) if e["event"] == event] if tracking.exists() else []
        )

    def delivered(self) -> Counter[str]:
        """Message-IDs in C's Maildir, counted."""
        box = self.data_dir("c") / "mailboxes" / "corp.test" / "bob"
        ids: Counter[str] = Counter()
        for data in maildir_messages(box).values():
            for line in data.split(b"\r\n"):
                if line.lower().startswith(b"message-id:"):
                    ids[line.split(b":", 1)[1].strip().decode()] += 1
        return ids

    def send(self, count: int) -> list[str]:
        host, port = self.addresses["a"]
        accepted = []
        with smtplib.SMTP(host, port, local_hostname="client.test", timeout=30) as client:
            for n in range(count):
                message_id = f"<chain-{n}@client.test>"
                data = f"Subject: {n}\r\nMessage-ID: {message_id}\r\n\r\nbody {n}\r\n".encode()
                client.sendmail("alice@client.test", ["bob@corp.test"], data)
                accepted.append(message_id)
        return accepted

    def stop_all(self) -> None:
        for node in self.nodes.values():
            node.kill()


@pytest.fixture
def chain(tmp_path: Path):  # type: ignore[no-untyped-def]
    made = Chain(tmp_path)
    yield made
    made.stop_all()


def _held_by_b(chain: Chain, count: int) -> None:
    """Wait until A holds a shadow of every message and B holds every message."""
    wait_until(lambda: len(chain.events("a", "SHADOW")) >= count, 30, "A's shadows")
    wait_until(lambda: len(chain.events("b", "DEFER")) >= count, 30, "B's attempts to C")


class TestNextHopDies:
    def test_b_dies_with_its_disk(self, chain: Chain) -> None:
        """B holds the mail (C down), is killed and wiped; A resubmits via C; all arrive once."""
        for name in ("b", "a"):
            chain.nodes[name].start()
        accepted = chain.send(COUNT)
        _held_by_b(chain, COUNT)
        assert not chain.events("a", "DISCARD")
        listing = subprocess.run(
            [
                sys.executable,
                "-m",
                "hubd",
                "queue",
                "list",
                "--shadows",
                "--json",
                "-c",
                str(chain.root / "a.toml"),
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        shadows = [json.loads(line) for line in listing.stdout.splitlines()]
        assert len(shadows) == COUNT
        assert {s["peer"] for s in shadows} == {"b"}
        assert {s["peer_address"] for s in shadows} == {chain.hostport("b")}

        chain.nodes["b"].kill()
        shutil.rmtree(chain.data_dir("b"))
        wait_until(lambda: len(chain.events("a", "RESUBMIT")) >= COUNT, 30, "A's resubmission")
        chain.nodes["c"].start()
        wait_until(lambda: sum(chain.delivered().values()) >= COUNT, 60, "delivery to C")
        delivered = chain.delivered()
        assert set(delivered) == set(accepted)
        assert all(count == 1 for count in delivered.values()), delivered

    def test_b_returns_with_its_queue(self, chain: Chain) -> None:
        """B comes back with its queue after A resubmitted: C still holds each message once."""
        for name in ("b", "a"):
            chain.nodes[name].start()
        accepted = chain.send(COUNT)
        _held_by_b(chain, COUNT)
        chain.nodes["b"].kill()
        wait_until(lambda: len(chain.events("a", "RESUBMIT")) >= COUNT, 30, "A's resubmission")
        chain.nodes["c"].start()
        wait_until(lambda: sum(chain.delivered().values()) >= COUNT, 60, "A's copies at C")
        chain.nodes["b"].start()

        def settled() -> bool:
            extra = len(chain.events("b", "DUPLICATE")) + len(chain.events("c", "DUPLICATE"))
            return extra >= COUNT

        wait_until(settled, 60, "B's copies to be dropped as duplicates")
        delivered = chain.delivered()
        assert set(delivered) == set(accepted)
        assert all(count == 1 for count in delivered.values()), delivered

    def test_shadows_cleared_after_delivery(self, chain: Chain) -> None:
        """With every node up, A's shadows are discarded once B has delivered to C."""
        for name in ("c", "b", "a"):
            chain.nodes[name].start()
        chain.send(5)
        wait_until(lambda: len(chain.events("a", "DISCARD")) >= 5, 30, "A's discards")
        assert sum(chain.delivered().values()) == 5
        assert not chain.events("a", "RESUBMIT")
