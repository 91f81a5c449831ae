"""Postfix's smtp-sink as the next hop: takes every message, counts it, throws it away.

Owns: one smtp-sink per MTA under test, on its own loopback address, its counter (-c) read
so that the end-to-end figure ends when the last message has arrived, and, when asked,
each message dumped to a file (-d) to check that every message came exactly once.
Public: SmtpSink, smtp_sink(), message_ids().
Failures: BenchError when it does not start listening; TimeoutError from wait_for().
Limits: a dump costs the sink a file per message, so it is for checking, not for measuring.
See also: smtp-sink(1), hubd/bench/counter.py, hubd/bench/compare.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from hubd.bench.counter import SINK_COUNT, CounterReader
from hubd.bench.errors import BenchError
from hubd.config import HostPort
from hubd.probe import smtp_greets
from hubd.waiting import wait_until

START_TIMEOUT = 15.0  # seconds for smtp-sink to listen
BACKLOG = 1024  # its listen(2) backlog: more than any session count the bench runs


class SmtpSink:
    """A running smtp-sink: where it listens, and how many messages it has received."""

    def __init__(
        self, process: subprocess.Popen[bytes], counter: CounterReader, address: HostPort
    ) -> None:
        self.address = address
        self._process = process
        self._counter = counter
        self.dump: Path | None = None

    @property
    def received(self) -> int:
        """Messages received so far (DATA completed)."""
        return self._counter.value

    def wait_for(
        self, count: int, timeout: float, alive: Callable[[], object] = lambda: True
    ) -> float:
        """Block until `count` messages have arrived; the perf_counter() time they had."""
        return self._counter.wait_for(count, timeout, alive)

    def follow(self, listener: Callable[[int], None] | None) -> None:
        """Call `listener` with the count of messages received, at each new one."""
        self._counter.follow(listener)

    def check_alive(self) -> bool:
        if self._process.poll() is not None:
            raise BenchError(f"smtp-sink on {self.address} exited {self._process.returncode}")
        return True


def message_ids(dump: Path) -> list[str]:
    """The Message-Id of every message smtp-sink dumped into `dump`, one per file."""
    found = []
    for entry in os.scandir(dump):
        with open(entry.path, "rb") as message:
            for line in message:
                if line.lower().startswith(b"message-id:"):
                    found.append(line.split(b":", 1)[1].strip().decode(errors="replace"))
                    break
                if line in (b"\n", b"\r\n"):  # end of the header: no Message-Id
                    break
    return found


@contextmanager
def smtp_sink(
    program: Path, address: HostPort, *, user: str, log: Path, dump: Path | None = None
) -> Iterator[SmtpSink]:
    """Start smtp-sink on `address` as `user` (it refuses to run as root); stop it after."""
    argv = [str(program), "-u", user, "-c"]
    if dump is not None:
        dump.mkdir(parents=True)
        shutil.chown(dump, user=user)
        argv += ["-d", f"{dump}/m."]  # dump-template: a file per message, random suffix
    argv += [f"inet:{address.host}:{address.port}", str(BACKLOG)]
    with log.open("ab") as errors:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
            start_new_session=True,
        )
    assert process.stdout is not None  # stdout=PIPE
    with process:
        sink = SmtpSink(process, CounterReader(process.stdout, SINK_COUNT), address)
        sink.dump = dump
        try:
            wait_until(
                lambda: sink.check_alive() and smtp_greets(address.host, address.port),
                START_TIMEOUT,
                f"smtp-sink to listen on {address}",
            )
            yield sink
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
