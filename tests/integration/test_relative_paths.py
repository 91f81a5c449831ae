"""Relative paths in a config are the config file's, whatever directory a command runs from.

A node is served from one working directory with a config elsewhere that names its data
directory and its mailboxes relatively; `hubd queue list -c` run from a third directory must
read that node's queue (not an empty one of its own), and mail lands under the config's
directory.
"""

from __future__ import annotations

import smtplib
import subprocess
import sys
from pathlib import Path

import pytest

from hubd.probe import smtp_greets
from hubd.testing import free_loopback_address, maildir_messages, wait_until

pytestmark = pytest.mark.integration


def _send(relay: tuple[str, int], recipient: str) -> None:
    data = b"From: a@corp.test\r\nSubject: rel\r\nMessage-ID: <rel@corp.test>\r\n\r\nhi\r\n"
    with smtplib.SMTP(*relay, local_hostname="client.test", timeout=10) as client:
        client.sendmail("a@corp.test", [recipient], data)


class TestConfigRelativePaths:
    def test_serve_and_queue_list_from_other_directories(self, tmp_path: Path) -> None:
        """data_dir and mailboxes.dir resolve against the config's directory for every command."""
        host, port = free_loopback_address()
        dead_hop, _ = free_loopback_address()  # nothing listens there: mail for it waits
        etc = tmp_path / "etc"
        elsewhere = tmp_path / "elsewhere"
        third = tmp_path / "third"
        for directory in (etc, elsewhere, third):
            directory.mkdir()
        (etc / "hubd.toml").write_text(
            f'local_domains = ["corp.test"]\n'
            f'[node]\nname = "rel"\ndata_dir = "data"\n'
            f'[smtp]\nlisten = ["{host}:{port}"]\ntrusted_networks = ["127.0.0.0/8"]\n'
            f'[mailboxes]\ndir = "mail"\n'
            f'[delivery]\ntls = "off"\nconnect_timeout = "2s"\n'
            f'[[routes]]\ndomains = ["held.test"]\nnext_hops = ["{dead_hop}:1"]\n',
            encoding="utf-8",
        )
        with (
            (tmp_path / "node.log").open("wb") as log,
            subprocess.Popen(
                [sys.executable, "-m", "hubd", "serve", "-c", "../etc/hubd.toml"],
                cwd=elsewhere,
                stdout=log,
                stderr=subprocess.STDOUT,
            ) as node,
        ):
            try:
                wait_until(lambda: smtp_greets(host, port), 30, "the node to accept mail")
                _send((host, port), "bob@corp.test")
                _send((host, port), "carol@held.test")
                wait_until(
                    lambda: maildir_messages(etc / "mail" / "corp.test" / "bob"),
                    15,
                    "delivery under etc/mail",
                )
                listing = subprocess.run(
                    [sys.executable, "-m", "hubd", "queue", "list", "--json", "-c",
                     "../etc/hubd.toml"],
                    cwd=third,
                    capture_output=True,
                    text=True,
                    timeout=30,
                    check=True,
                )  # fmt: skip
                assert "carol@held.test" in listing.stdout
            finally:
                node.terminate()
                node.wait(timeout=30)
        assert (etc / "data" / "queue.db").exists()
        assert (etc / "data" / "lock").exists()
        assert not list(elsewhere.iterdir()), "nothing written in the working directory"
        assert not list(third.iterdir())
