"""hubd's own load generator: N messages of S bytes over C concurrent SMTP sessions.

Owns: the test message, the sessions (aiosmtplib, one connection each, reused), and timing
each end of DATA to the reply to it, which smtp-source does not report.
Public: LoadResult, drive_load(), build_message(), dot_stuff(), Progress.
Failures: none raised for a refused or failed message: it is counted by its reply.
Limits: the latency clock starts when the final CRLF.CRLF is handed to the socket, so for
messages larger than the socket buffers it also counts part of the transfer.
See also: hubd/bench/run.py, hubd/bench/compare.py (the latency pass), hubd/bench/report.py.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import aiosmtplib

from hubd.bench.settings import RECIPIENT, SENDER
from hubd.config import HostPort

COMMAND_TIMEOUT = 60.0  # seconds per SMTP command; a node under load may be slow, not stuck
_LINE = 80  # filler lines of 78 characters plus CRLF
_LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)

Progress = Callable[[int], None]


@dataclass(slots=True)
class LoadResult:
    """What the client side saw: timings of accepted messages, refusals by reply."""

    latencies: list[float] = field(default_factory=list)
    refusals: Counter[str] = field(default_factory=Counter)
    started_at: float = 0.0  # wall clock, to compare with delivered files' mtimes
    seconds: float = 0.0


def build_message(serial: int, size: int) -> bytes:
    """A message of exactly `size` bytes (at least its header) with CRLF lines and no dots."""
    header = (
        f"From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: hubd bench #{serial}\r\n"
        f"Message-ID: <{serial}.bench@hubd.test>\r\n\r\n"
    ).encode("ascii")
    room = size - len(header)
    if room < 2:
        return header
    full, rest = divmod(room, _LINE)
    lengths = [_LINE] * full + ([rest] if rest else [])
    if lengths[-1] == 1:  # no line is one byte long: the one before gives it a byte
        lengths[-2:] = [lengths[-2] - 1, 2]
    return header + b"".join(b"x" * (n - 2) + b"\r\n" for n in lengths)


def dot_stuff(data: bytes) -> bytes:
    """The DATA transfer of CRLF message bytes: leading dots doubled, then CRLF.CRLF."""
    return _LEADING_DOT.sub(b"..", data) + b".\r\n"


async def _send_one(client: aiosmtplib.SMTP, data: bytes) -> float:
    """One transaction; the seconds from the final CRLF.CRLF to the reply to it."""
    await client.mail(SENDER)
    await client.rcpt(RECIPIENT)
    reply = await client.execute_command(b"DATA")
    if reply.code != 354:
        raise aiosmtplib.SMTPDataError(reply.code, reply.message)
    protocol = client.protocol
    if protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("connection lost after DATA")
    # aiosmtplib's data() gives no moment between its write and its read; its protocol's
    # public write() and read_response() do, and no await separates write and clock.
    protocol.write(dot_stuff(data))
    sent = time.perf_counter()
    reply = await protocol.read_response(timeout=COMMAND_TIMEOUT)
    latency = time.perf_counter() - sent
    if reply.code != 250:
        raise aiosmtplib.SMTPDataError(reply.code, reply.message)
    return latency


async def _session(
    target: HostPort, size: int, serials: Iterator[int], load: LoadResult, progress: Progress
) -> None:
    """One SMTP session taking serials until none is left; every failure is counted."""
    client = aiosmtplib.SMTP(
        hostname=target.host,
        port=target.port,
        local_hostname="hubd-bench",
        start_tls=False,
        timeout=COMMAND_TIMEOUT,
    )
    try:
        for serial in serials:
            data = build_message(serial, size)
            try:
                if not client.is_connected:
                    await client.connect()
                load.latencies.append(await _send_one(client, data))
            except aiosmtplib.SMTPResponseException as error:
                load.refusals[f"{error.code} {error.message}"] += 1
                if client.is_connected:
                    await client.rset()
            except (aiosmtplib.SMTPException, OSError) as error:
                load.refusals[f"connection: {type(error).__name__}: {error}"] += 1
                client.close()
            progress(1)
    finally:
        if client.is_connected:
            await client.quit()


async def drive_load(
    target: HostPort, *, count: int, size: int, concurrency: int, progress: Progress
) -> LoadResult:
    """Send `count` messages over `concurrency` sessions; time the whole and each DATA."""
    serials = iter(range(1, count + 1))  # shared: each session takes the next one free
    load = LoadResult(started_at=time.time())
    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for number in range(min(concurrency, count)):
            group.create_task(
                _session(target, size, serials, load, progress), name=f"bench-session-{number}"
            )
    load.seconds = time.perf_counter() - started
    return load
