"""`hubd send` and `hubd --version` as a user runs them: one-line errors, replies with codes."""

from __future__ import annotations

import asyncio
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hubd import __version__
from hubd.testing import free_loopback_address, maildir_messages, wait_until, write_config
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


HUBD = str(Path(sys.executable).parent / "hubd")


def _serve_config(tmp_path: Path, local_domains: list[str]) -> str:
    """A fresh node's config on its own loopback address."""
    host, port = free_loopback_address()
    config = write_config(
        tmp_path / "hubd.toml",
        {
            "local_domains": local_domains,
            "node": {"name": "hint", "data_dir": "data"},
            "smtp": {"listen": [f"{host}:{port}"]},
        },
    )
    return str(config)


def _hint_line(node: subprocess.Popen[str]) -> str:
    """The line `hubd serve` prints after "accepting mail on ..." (log lines may come first)."""
    assert node.stderr is not None
    for line in node.stderr:
        if line.startswith("hubd: node ") and "accepting mail" in line:
            return node.stderr.readline()
    raise AssertionError("hubd serve ended before it accepted mail")


class TestServeHints:
    def test_the_suggested_send_works_as_printed(self, tmp_path: Path) -> None:
        """With a local domain, the printed `send` runs as is and lands in the printed Maildir."""
        config = _serve_config(tmp_path, ["corp.test"])
        with subprocess.Popen(
            [HUBD, "serve", "-c", config], stderr=subprocess.PIPE, text=True
        ) as node:
            try:
                hint = _hint_line(node)
                command, _, mailboxes = hint.removeprefix("hubd: try: ").partition(
                    "   (mailboxes: "
                )
                argv = shlex.split(command)
                assert argv[0] == HUBD
                assert argv[argv.index("--to") + 1].endswith("@corp.test")
                assert argv[argv.index("--from") + 1].endswith("@corp.test")
                sent = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
                assert sent.returncode == 0, sent.stderr
                box = Path(mailboxes.rstrip(")\n")) / "corp.test" / "user"
                wait_until(lambda: maildir_messages(box), 15, f"mail in {box}")
            finally:
                node.terminate()

    def test_no_local_domain_says_so(self, tmp_path: Path) -> None:
        """Without local domains no send to the internet is suggested; the hint says why."""
        config = _serve_config(tmp_path, [])
        with subprocess.Popen(
            [HUBD, "serve", "-c", config], stderr=subprocess.PIPE, text=True
        ) as node:
            try:
                hint = _hint_line(node)
            finally:
                node.terminate()
        assert hint.startswith("hubd: this node has no local_domains"), hint
        assert "send --server" not in hint
