"""Shared fixtures: in-process nodes on their own loopback addresses, real files in tmp_path."""

from __future__ import annotations

import copy
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hubd.config import parse_config
from hubd.dns_server import DnsServer
from hubd.node import Node
from hubd.testing import free_loopback_address
from tests.pki import Pki

# The shared corpus sits beside the checkout (../shared/corpus); HUBD_CORPUS points elsewhere
# (the test of what happens when it is missing uses it).
CORPUS = Path(
    os.environ.get("HUBD_CORPUS")
    or Path(__file__).resolve().parents[2] / "shared" / "corpus" / "messages"
)

NodeFactory = Callable[..., Awaitable[Node]]


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge config dictionaries (tables merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def node_settings(data_dir: Path, name: str, host: str, port: int = 0) -> dict[str, Any]:
    """A test node's configuration: its own address, fast retries, short timeouts."""
    return {
        "local_domains": [],
        # One process unless a test asks for more: quick to start; the tests of kills, lost
        # replies, shadows and chaos run nodes of several processes too.
        "node": {
            "name": name,
            "hostname": f"{name}.hubd.test",
            "data_dir": str(data_dir),
            "processes": 1,
        },
        "smtp": {"listen": [f"{host}:{port}"], "trusted_networks": ["127.0.0.0/8"]},
        "queue": {"retry": ["1s"], "expiry": "1h"},
        "delivery": {"tls": "off", "connect_timeout": "5s", "command_timeout": "10s"},
        # Peers fetch discard notices within a second, so shadows clear quickly in tests.
        "shadow": {"heartbeat_interval": "1s", "heartbeat_failures": 3},
    }


@pytest.fixture
async def start_node(tmp_path: Path) -> AsyncIterator[NodeFactory]:
    """Start in-process nodes; each gets its own 127.0.x.y and data dir; all stop at the end."""
    nodes: list[Node] = []

    async def start(
        name: str = "hub", address: tuple[str, int] | None = None, **overrides: Any
    ) -> Node:
        host, port = address or (free_loopback_address()[0], 0)
        settings = merge(node_settings(tmp_path / name, name, host, port), overrides)
        node = Node(parse_config(settings))
        await node.start()
        nodes.append(node)
        return node

    yield start
    for node in reversed(nodes):
        await node.stop(grace=5)


def _corpus_missing() -> str:
    return (
        f"the shared corpus of real messages is not at {CORPUS}: it comes with the project's "
        "shared/ folder (beside the checkout, as ../shared/corpus/messages; messages from "
        "mailgun/flanker's test fixtures)"
    )


def skip_module_without_corpus() -> None:
    """Outside CI, skip the calling test module (one line) when the corpus is missing."""
    if not CORPUS.is_dir() and os.environ.get("CI") != "true":
        pytest.skip(f"{_corpus_missing()}; skipped outside CI", allow_module_level=True)


@pytest.fixture
def corpus() -> Path:
    """The shared corpus of real messages (../shared/corpus/messages); fails when missing.

    (Outside CI, modules that use it call skip_module_without_corpus() first.)
    """
    if not CORPUS.is_dir():
        pytest.fail(f"{_corpus_missing()}; CI=true, so this fails")
    return CORPUS


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    """A real DNS server on its own loopback address, with an empty zone to fill in."""
    host, _ = free_loopback_address()
    server = DnsServer("", host=host, port=0)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """A test certificate authority in tmp_path/pki (trustme)."""
    return Pki.create(tmp_path / "pki")
