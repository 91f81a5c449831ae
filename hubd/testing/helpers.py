"""Waiting on conditions, picking loopback addresses, and running nodes as processes.

Public: wait_until(), async_wait_until(), free_loopback_address(), NodeProcess,
maildir_messages(), write_config().
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar, overload

from hubd.probe import smtp_greets

T = TypeVar("T")


def wait_until(predicate: Callable[[], T | None], timeout: float, what: str = "condition") -> T:
    """Poll `predicate` until it returns something truthy; raise TimeoutError after `timeout`."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


@overload
async def async_wait_until(
    predicate: Callable[[], Awaitable[T]], within: float, what: str = "condition"
) -> T: ...


@overload
async def async_wait_until(
    predicate: Callable[[], T], within: float, what: str = "condition"
) -> T: ...


async def async_wait_until(
    predicate: Callable[[], T | Awaitable[T]], within: float, what: str = "condition"
) -> T:
    """Like wait_until(), inside an event loop; the predicate may be a coroutine function."""
    deadline = time.monotonic() + within
    delay = 0.01
    while True:
        value = predicate()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.2)


def free_loopback_address(rng: random.Random | None = None) -> tuple[str, int]:
    """A 127.0.0.x address of its own and a port that was free on it a moment ago."""
    chooser = rng or random.Random()
    for _ in range(100):
        host = f"127.0.{chooser.randint(1, 250)}.{chooser.randint(2, 254)}"
        with socket.socket() as probe:
            try:
                probe.bind((host, 0))
            except OSError:
                continue
            return host, probe.getsockname()[1]
    raise OSError("no free loopback address found")


def maildir_messages(root: Path) -> dict[Path, bytes]:
    """Every delivered file under a mailbox root (new/ and cur/), by path."""
    found: dict[Path, bytes] = {}
    if not root.exists():
        return found
    for sub in ("new", "cur"):
        for path in root.rglob(f"{sub}/*"):
            if path.is_file():
                found[path] = path.read_bytes()
    return found


class NodeProcess:
    """`hubd serve` in a child process, which tests can kill, stop and restart."""

    def __init__(self, config: Path, relay: tuple[str, int], log: Path) -> None:
        self.config = config
        self.relay = relay
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        """Start the node and wait until it answers with a 220 greeting."""
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "hubd", "serve", "-c", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        wait_until(
            lambda: self._check_alive() and smtp_greets(*self.relay),
            timeout,
            f"node {self.config} to accept mail",
        )

    def _check_alive(self) -> bool:
        assert self.process is not None
        code = self.process.poll()
        if code is not None:
            raise RuntimeError(f"node exited with {code}; see {self.log}")
        return True

    def kill(self) -> None:
        """SIGKILL: a crash with no chance to clean up."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)
