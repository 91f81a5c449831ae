"""A `hubd …` command run by the bench as a child, in a process group of its own.

Owns: starting `python -m hubd ARGS` with its output in a log file, waiting until it greets,
telling whether it still runs, and stopping it and everything it started: SIGTERM to the
leader (a node drains), then SIGKILL to the whole group, so no process of it outlives the run.
Public: HubdChild, hubd_child().
Failures: BenchError when it exits before it greets, or does not greet in time.
Limits: a process that leaves the group (setsid) is not stopped.
See also: hubd/bench/node.py, hubd/bench/run.py, hubd/bench/usage.py (the group is measured).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hubd.bench.errors import BenchError
from hubd.config import HostPort
from hubd.probe import smtp_greets
from hubd.waiting import wait_until

START_TIMEOUT = 30.0  # seconds for a child node or sink to greet
STOP_TIMEOUT = 60.0  # seconds for a child to drain after SIGTERM before it is killed


class HubdChild:
    """A running `hubd …` child: its pid (the leader of its process group) and liveness."""

    def __init__(self, process: subprocess.Popen[bytes], what: str, log: Path) -> None:
        self.process = process
        self.what = what
        self.log = log

    @property
    def pid(self) -> int:
        return self.process.pid

    def check_alive(self) -> bool:
        """True while it runs; BenchError naming its log once it has exited."""
        if self.process.poll() is not None:
            raise BenchError(f"{self.what} exited with {self.process.returncode}; see {self.log}")
        return True

    def stop(self) -> None:
        """SIGTERM the leader and wait for its drain; then SIGKILL whatever of the group is left."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


@contextmanager
def hubd_child(argv: list[str], address: HostPort, log: Path) -> Iterator[HubdChild]:
    """Run `hubd ARGV` until the block ends, greeting on `address` before it is yielded."""
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "hubd", *argv],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: measured and stopped as one
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    child = HubdChild(process, f"hubd {argv[0]}", log)
    try:
        try:
            wait_until(
                lambda: child.check_alive() and smtp_greets(address.host, address.port),
                START_TIMEOUT,
                f"hubd {argv[0]} to greet on {address}",
            )
        except TimeoutError as error:
            raise BenchError(f"{error}; see {log}") from None
        yield child
    finally:
        child.stop()
