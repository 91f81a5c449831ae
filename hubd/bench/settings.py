"""What a `hubd bench` run is asked to do, checked when it is built.

Owns: the modes, the parameters of a single run and of a side-by-side run against Postfix,
and the envelope every load uses.
Public: BenchMode, BenchSettings, CompareSettings, parse_node_settings(), DOMAIN, SENDER,
RECIPIENT, MIN_SIZE.
Failures: ValueError naming the option, at construction.
See also: hubd/cli.py (the options), hubd/bench/run.py, hubd/bench/compare.py.
"""

from __future__ import annotations

import enum
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubd.config import HostPort

DOMAIN = "bench.test"
SENDER = f"bench-sender@{DOMAIN}"
RECIPIENT = f"bench@{DOMAIN}"
MIN_SIZE = 256  # room for the headers of build_message() with any serial


class BenchMode(enum.StrEnum):
    """What the load is sent to."""

    NODE = "node"  # a node started for the run, as a subprocess, delivering into Maildir
    SERVER = "server"  # a node already running at --server; no delivery time
    CEILING = "ceiling"  # the sink: hubd's listener and handler, nothing stored


@dataclass(frozen=True, slots=True)
class BenchSettings:
    """One run's parameters, checked at construction."""

    count: int = 2000
    size: int = 4096
    concurrency: int = 10
    mode: BenchMode = BenchMode.NODE
    server: HostPort | None = None
    timeout: float = 600.0  # seconds to wait for every message to be delivered

    def __post_init__(self) -> None:
        if self.count < 1 or self.concurrency < 1:
            raise ValueError("--count and --concurrency must be at least 1")
        if self.size < MIN_SIZE:
            raise ValueError(f"--size must be at least {MIN_SIZE} bytes")
        if (self.mode is BenchMode.SERVER) != (self.server is not None):
            raise ValueError("a server address goes with server mode, and only with it")


@dataclass(frozen=True, slots=True)
class CompareSettings:
    """A side-by-side run: the same smtp-source load into Postfix and into hubd, in turns."""

    count: int = 3000
    size: int = 4096  # smtp-source -l: body bytes; it adds about 130 bytes of headers
    sessions: tuple[int, ...] = (10,)  # one comparison per session count
    rounds: int = 3  # runs of each MTA per session count, alternating which goes first
    latency: bool = True  # also time end of DATA to 250 with hubd's own load generator
    directory: Path = Path("/var/tmp")  # where the run's queues go: a real filesystem
    timeout: float = 600.0  # seconds for one run's delivery to finish
    verify: bool = False  # the sinks keep every message; each must arrive exactly once
    keep: bool = False  # keep the run directory (configs, logs, queues) afterwards
    node_settings: Mapping[str, Any] = field(default_factory=dict)  # merged into hubd.toml

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError("--count must be at least 1")
        if not self.sessions or min(self.sessions) < 1:
            raise ValueError("--sessions must be at least 1")
        if self.rounds < 1:
            raise ValueError("--rounds must be at least 1")
        if self.size < MIN_SIZE:
            raise ValueError(f"--size must be at least {MIN_SIZE} bytes")


def parse_node_settings(items: list[str]) -> dict[str, Any]:
    """`SECTION.KEY=VALUE` items (VALUE in TOML: 2, "2s", true) as nested config settings."""
    settings: dict[str, Any] = {}
    for item in items:
        name, equals, value = item.partition("=")
        path = name.strip().split(".")
        if not equals or not all(path):
            raise ValueError(f"--node-setting {item!r}: expected SECTION.KEY=VALUE")
        try:
            parsed = tomllib.loads(f"value = {value.strip()}")["value"]
        except tomllib.TOMLDecodeError:
            raise ValueError(
                f'--node-setting {item!r}: the value is not TOML (quote strings: "2s")'
            ) from None
        table = settings
        for key in path[:-1]:
            table = table.setdefault(key, {})
            if not isinstance(table, dict):
                raise ValueError(f"--node-setting {item!r}: {key} is set as a value already")
        table[path[-1]] = parsed
    return settings
