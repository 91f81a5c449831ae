"""Postfix's smtp-source as the load: a new connection per message, timed from spawn to exit.

Owns: running `smtp-source -s SESSIONS -m COUNT -l SIZE` against an MTA, following its
counter (-c) for the progress bar, and its elapsed time, the inbound figure of a run.
Public: SourceResult, run_smtp_source(), source_argv().
Failures: BenchError when smtp-source exits non-zero (it stops at the first unexpected
reply) or runs past the timeout; its stderr is in the message.
Limits: -l is the body only; smtp-source adds From, To, Date and Message-Id (~130 bytes).
See also: smtp-source(1), hubd/bench/counter.py, hubd/bench/compare.py.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hubd.bench.counter import SOURCE_COUNT, CounterReader
from hubd.bench.errors import BenchError
from hubd.bench.settings import RECIPIENT, SENDER
from hubd.config import HostPort

HELO_NAME = "source.bench.test"


@dataclass(frozen=True, slots=True)
class SourceResult:
    """What smtp-source did: messages it saw accepted, and the seconds from spawn to exit."""

    completed: int
    started: float  # perf_counter() just before the spawn
    seconds: float


def source_argv(
    program: Path, target: HostPort, *, sessions: int, count: int, size: int
) -> list[str]:
    """The smtp-source command line: SESSIONS in parallel, one connection per message."""
    return [
        str(program),
        "-c",  # a counter on stdout: progress, and how far it got
        "-s",
        str(sessions),
        "-m",
        str(count),
        "-l",
        str(size),
        "-f",
        SENDER,
        "-t",
        RECIPIENT,
        "-M",
        HELO_NAME,
        f"inet:{target.host}:{target.port}",
    ]


def run_smtp_source(
    argv: list[str], log: Path, timeout: float, progress: Callable[[int], None]
) -> SourceResult:
    """Run smtp-source to its end; BenchError if it fails or runs past `timeout` seconds."""
    with log.open("ab") as errors:
        started = time.perf_counter()
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
            start_new_session=True,  # Ctrl-C reaches the bench, which stops everything
        )
    assert process.stdout is not None  # stdout=PIPE
    with process:
        counter = CounterReader(process.stdout, SOURCE_COUNT, progress)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"smtp-source still running after {timeout:.0f} s") from None
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        seconds = time.perf_counter() - started
        counter.join()
    if code != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise BenchError(
            f"smtp-source exited {code} after {counter.value} messages: " + " / ".join(tail)
        )
    return SourceResult(counter.value, started, seconds)
