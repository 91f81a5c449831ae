"""`hubd send` and `hubd --version` as a user runs them: one-line errors, replies with codes."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys

import pytest

from hubd import __version__
from hubd.testing import free_loopback_address
from tests.conftest import NodeFactory

pytestmark = pytest.mark.integration


def _hubd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hubd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class TestSendErrors:
    def test_server_not_listening(self) -> None:
        """Nothing listens there: one line naming the server, exit 1, no traceback."""
        host, _ = free_loopback_address()
        with socket.socket() as probe:  # a port that was free, and that nobody listens on
            probe.bind((host, 0))
            port = probe.getsockname()[1]
        done = _hubd("send", "--server", f"{host}:{port}", "--from", "a@b.test", "--to", "u@c.test")
        assert done.returncode == 1
        assert done.stderr.splitlines() == [
            f"hubd: cannot reach {host}:{port}: connection refused (is a node listening there?)"
        ]
        assert done.stdout == ""

    @pytest.mark.parametrize(
        ("option", "value"),
        [("--to", "x@"), ("--to", "@x.test"), ("--to", "no-at"), ("--from", "a@")],
        ids=["empty-domain", "empty-local", "no-at", "bad-sender"],
    )
    def test_bad_address(self, option: str, value: str) -> None:
        """A malformed address: one line naming the option, exit 1, before any connection."""
        args = {"--from": "a@b.test", "--to": "u@c.test", option: value}
        done = _hubd("send", "--server", "127.0.0.1:1", *[x for kv in args.items() for x in kv])
        assert done.returncode == 1
        assert done.stderr.splitlines() == [
            f"hubd: {option}: not an address: {value!r} (expected local@domain)"
        ]

    def test_version(self) -> None:
        """`hubd --version` prints the version and exits 0."""
        done = _hubd("--version")
        assert (done.returncode, done.stdout) == (0, f"hubd {__version__}\n")


class TestSendReplies:
    async def test_each_reply_with_its_code(self, start_node: NodeFactory) -> None:
        """Accepted messages print `250 ...`; a refused recipient prints its code; exit 1."""
        node = await start_node(
            "hub",
            local_domains=["corp.test"],
            mailboxes={"catch_all": False, "recipients": ["bob@corp.test"]},
        )
        server = str(node.relay_addresses[0])
        ok = await asyncio.to_thread(
            _hubd, "send", "--server", server, "--from", "a@corp.test", "--to", "bob@corp.test",
            "--count", "2",
        )  # fmt: skip
        assert ok.returncode == 0, ok.stderr
        lines = ok.stdout.splitlines()
        assert [line.split()[:3] for line in lines] == [
            ["1:", "250", "2.0.0"],
            ["2:", "250", "2.0.0"],
        ]
        assert all(line.endswith("queued") for line in lines)

        mixed = await asyncio.to_thread(
            _hubd, "send", "--server", server, "--from", "a@corp.test",
            "--to", "bob@corp.test", "--to", "nobody@corp.test",
        )  # fmt: skip
        assert mixed.returncode == 1
        refused, accepted = mixed.stdout.splitlines()
        assert refused.startswith("1: nobody@corp.test refused: 550 5.1.1")
        assert accepted.startswith("1: 250 2.0.0")
