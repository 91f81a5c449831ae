"""A partition made of real network namespaces: each node its own host, its link cut, healed.

The test (as root) makes a namespace per node (A, B, M and the client C) and one for a
bridge, joined by veth links, with addresses in a random 10.x.y.0/24 that exist only
inside those namespaces; all are deleted at the end. A routes corp.test to [B, M], B to
[M]; M, the mailstore, starts late, so B holds the mail and A its shadows. Then B's link
goes down (its packets are dropped, nothing is closed or refused), M starts, A misses its
heartbeats to B, declares B dead and delivers its resubmitted copies to M. B's link comes
back up, and B's own copies go nowhere twice: M holds each message once.
Skipped where namespaces cannot be made (not root, no `ip`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hubd.testing import maildir_messages, wait_until, write_config
from hubd.testing.helpers import NodeProcess
from hubd.tracking import read_events
from tests.conftest import merge, node_settings

pytestmark = pytest.mark.integration

NAMES = ("a", "b", "m", "c")  # c: the client's host
PORT = 2525
COUNT = 3


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def _netns_available() -> bool:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    probe = f"hubd-probe-{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", probe)
    except (OSError, subprocess.SubprocessError):
        return False
    _ip("netns", "del", probe)
    return True


class Network:
    """The namespaces, the bridge and the links; `cut` and `heal` one node's link."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.prefix = f"10.{secrets.randbelow(200) + 20}.{secrets.randbelow(250) + 1}"
        self.switch = f"hubd-sw-{tag}"
        self.spaces = {name: f"hubd-{name}-{tag}" for name in NAMES}
        self.links = {name: f"h{name}{tag}" for name in NAMES}  # each end's name, <= 15 chars
        self.addresses = {name: f"{self.prefix}.{i + 1}" for i, name in enumerate(NAMES)}

    def create(self) -> None:
        _ip("netns", "add", self.switch)
        self.run_in(self.switch, "ip", "link", "add", "br0", "type", "bridge")
        self.run_in(self.switch, "ip", "link", "set", "br0", "up")
        for name in NAMES:
            space, link = self.spaces[name], self.links[name]
            _ip("netns", "add", space)
            _ip("link", "add", link, "netns", space, "type", "veth", "peer", "name", f"{link}s")
            _ip("link", "set", f"{link}s", "netns", self.switch)
            self.run_in(self.switch, "ip", "link", "set", f"{link}s", "master", "br0", "up")
            self.run_in(space, "ip", "addr", "add", f"{self.addresses[name]}/24", "dev", link)
            self.run_in(space, "ip", "link", "set", link, "up")
            self.run_in(space, "ip", "link", "set", "lo", "up")

    def delete(self) -> None:
        for space in [*self.spaces.values(), self.switch]:
            with contextlib.suppress(subprocess.SubprocessError):
                _ip("netns", "del", space)

    @staticmethod
    def run_in(space: str, *command: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["ip", "netns", "exec", space, *command], check=True, capture_output=True, timeout=60
        )

    def cut(self, name: str) -> None:
        self.run_in(self.spaces[name], "ip", "link", "set", self.links[name], "down")

    def heal(self, name: str) -> None:
        self.run_in(self.spaces[name], "ip", "link", "set", self.links[name], "up")

    def hop(self, name: str) -> str:
        return f"{self.addresses[name]}:{PORT}"


class NetnsNode(NodeProcess):
    """`hubd serve` inside a namespace; ready when it says so (the test cannot connect)."""

    def __init__(self, space: str, config: Path, relay: tuple[str, int], log: Path) -> None:
        super().__init__(config, relay, log)
        self.space = space

    def start(self, timeout: float = 30.0) -> None:
        offset = self.log.stat().st_size if self.log.exists() else 0
        serve = [sys.executable, "-m", "hubd", "serve", "-c", str(self.config)]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                ["ip", "netns", "exec", self.space, *serve],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
            )
        wait_until(
            lambda: self._check_alive() and self._said_ready(offset),
            timeout,
            f"node {self.config} to accept mail",
        )


@pytest.fixture
def network() -> Iterator[Network]:
    if not _netns_available():
        pytest.skip("network namespaces need root and iproute2")
    net = Network()
    try:
        net.create()
        yield net
    finally:
        net.delete()


def _node(net: Network, root: Path, name: str, overrides: dict[str, Any]) -> NetnsNode:
    host = net.addresses[name]
    settings = merge(node_settings(root / name, name, host, PORT), overrides)
    settings["smtp"]["trusted_networks"] = [f"{net.prefix}.0/24"]
    config = write_config(root / f"{name}.toml", settings)
    return NetnsNode(net.spaces[name], config, (host, PORT), root / f"{name}.log")


def _events(root: Path, name: str, event: str) -> int:
    tracking = root / name / "tracking"
    found = read_events(tracking) if tracking.exists() else []
    return sum(1 for e in found if e["event"] == event)


def _delivered(root: Path) -> Counter[bytes]:
    box = root / "m" / "mailboxes" / "corp.test" / "bob"
    return Counter(
        line
        for data in maildir_messages(box).values()
        for line in data.split(b"\r\n")
        if line.startswith(b"Message-ID:")
    )


def _send(net: Network, count: int) -> None:
    script = (
        "import smtplib, sys\n"
        f"with smtplib.SMTP('{net.addresses['a']}', {PORT}, local_hostname='c.test') as c:\n"
        f"    for n in range({count}):\n"
        "        c.sendmail('alice@client.test', ['bob@corp.test'],"
        " f'Message-ID: <ns-{n}@client.test>\\r\\n\\r\\n{n}\\r\\n'.encode())\n"
    )
    net.run_in(net.spaces["c"], sys.executable, "-c", script)


class TestNamespacePartition:
    def test_next_hop_cut_off_past_the_heartbeat_limit_then_healed(
        self, network: Network, tmp_path: Path
    ) -> None:
        """B's link down past the heartbeat limit, then up: every message at M exactly once."""
        net = network
        route = {"domains": ["corp.test"]}
        nodes = {
            "m": _node(net, tmp_path, "m", {"local_domains": ["corp.test"]}),
            "b": _node(net, tmp_path, "b", {"routes": [route | {"next_hops": [net.hop("m")]}]}),
            "a": _node(
                net,
                tmp_path,
                "a",
                {"routes": [route | {"next_hops": [net.hop("b"), net.hop("m")]}]},
            ),
        }
        try:
            nodes["b"].start()
            nodes["a"].start()
            _send(net, COUNT)
            wait_until(lambda: _events(tmp_path, "a", "SHADOW") >= COUNT, 30, "A's shadows at B")
            net.cut("b")
            nodes["m"].start()
            wait_until(lambda: _events(tmp_path, "a", "RESUBMIT") >= COUNT, 30, "B declared dead")
            wait_until(lambda: len(_delivered(tmp_path)) >= COUNT, 30, "A's copies at M")
            net.heal("b")
            # B's copies are dropped by XQTAKEN at B, or by origin key at M.
            wait_until(
                lambda: (
                    _events(tmp_path, "b", "DUPLICATE") + _events(tmp_path, "m", "DUPLICATE")
                    >= COUNT
                ),
                60,
                "B's copies dropped as duplicates",
            )
            delivered = _delivered(tmp_path)
            assert len(delivered) == COUNT
            assert set(delivered.values()) == {1}
        finally:
            for node in nodes.values():
                node.kill()
