"""Nodes as processes and delivered Maildir files, for integration tests.

Public: NodeProcess, group_alive(), child_processes(), maildir_messages(); wait_until(),
async_wait_until() (from hubd.waiting) and free_loopback_address() (from hubd.loopback),
re-exported for tests.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from hubd.loopback import free_loopback_address
from hubd.probe import smtp_greets
from hubd.waiting import async_wait_until, wait_until

__all__ = [
    "NodeProcess",
    "async_wait_until",
    "child_processes",
    "free_loopback_address",
    "group_alive",
    "maildir_messages",
    "wait_until",
]


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


def group_alive(pgid: int) -> bool:
    """Whether any process of the process group `pgid` still runs (zombies do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def child_processes(parent: int) -> dict[str, int]:
    """hubd worker processes of a supervisor, by the name the supervisor gave each."""
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            ppid = int((proc / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and b"hubd.worker" in argv and len(argv) > 3:
            found[argv[3].decode()] = int(proc.name)
    return found


class NodeProcess:
    """`hubd serve` in a child process, which tests can kill, stop and restart."""

    def __init__(
        self, config: Path, relay: tuple[str, int], log: Path, args: Sequence[str] = ()
    ) -> None:
        self.config = config
        self.relay = relay
        self.log = log
        self.args = tuple(args)  # more `hubd serve` options, such as ("--log-level", "debug")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        """Start the node and wait until it says it accepts mail and answers with a 220."""
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "hubd", "serve", "-c", str(self.config), *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                # Its own process group: a node of several processes is killed as a whole.
                start_new_session=True,
            )
        wait_until(
            lambda: self._check_alive() and self._said_ready(offset) and smtp_greets(*self.relay),
            timeout,
            f"node {self.config} to accept mail",
        )

    def _said_ready(self, offset: int) -> bool:
        # Every process of the node is up once `hubd serve` prints this line.
        with self.log.open("rb") as log:
            log.seek(offset)
            return b"accepting mail on" in log.read()

    def _check_alive(self) -> bool:
        assert self.process is not None
        code = self.process.poll()
        if code is not None:
            raise RuntimeError(f"node exited with {code}; see {self.log}")
        return True

    def kill(self) -> None:
        """SIGKILL to the node's whole process group: a crash with no chance to clean up."""
        if self.process is None:
            return
        pgid = self.process.pid
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            self.process.wait(timeout=30)
        wait_until(lambda: not group_alive(pgid), 30, "the node's processes to exit")

    def children(self) -> dict[str, int]:
        """The node's child processes by name (acceptor-0, delivery-0, ...), when it has any."""
        assert self.process is not None
        return child_processes(self.process.pid)

    def kill_child(self, name: str) -> None:
        """SIGKILL one child process of the node (its supervisor restarts it)."""
        os.kill(self.children()[name], signal.SIGKILL)

    def greets(self) -> bool:
        """Whether the node answers a connection with a 220 greeting now."""
        return smtp_greets(*self.relay)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)
