"""Load measurement of a node over SMTP (`hubd bench`, `hubd bench-sink`).

Owns: sending N messages of S bytes over C concurrent sessions (aiosmtplib), timing each end
of DATA to its reply, waiting for Maildir delivery, reading the group-commit counters, and the
storage-free sink (hubd's own listener and handler, an intake that stores nothing).
Public: BenchMode, BenchSettings, BenchReport, run_bench(), serve_sink(), build_message(),
percentile(), summarise(), format_report().
Failures: BenchError when a child node or sink does not start, or delivery does not finish
within the timeout; a refused or failed message is counted, not raised.
Limits: the latency clock starts when the final CRLF.CRLF is handed to the socket, so for
messages larger than the socket buffers it also counts part of the transfer.
See also: hubd/cli.py, storage/writer.py (the `stats` rows), hubd/testing (child processes).
"""

from __future__ import annotations

import asyncio
import enum
import math
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosmtplib
import typer

from hubd.config import Config, HostPort, load_config
from hubd.delivery.maildir import mailbox_dirname
from hubd.errors import HubdError
from hubd.probe import smtp_greets
from hubd.routing import Router, RouteTable
from hubd.smtp.handler import InboundHandler, InboundLimits, ReceivedMessage
from hubd.smtp.relay import RelayPolicy
from hubd.smtp.server import SessionRegistry, start_listener
from hubd.testing import free_loopback_address, wait_until, write_config
from storage.summary import read_counters

DOMAIN = "bench.test"
SENDER = f"bench-sender@{DOMAIN}"
RECIPIENT = f"bench@{DOMAIN}"
MIN_SIZE = 256  # room for the headers of build_message() with any serial
COMMAND_TIMEOUT = 60.0  # seconds per SMTP command; a node under load may be slow, not stuck
START_TIMEOUT = 30.0  # seconds for a child node or sink to greet
STOP_TIMEOUT = 60.0  # seconds for a child to drain after SIGTERM before it is killed
_LINE = 80  # filler lines of 78 characters plus CRLF
_LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)

Progress = Callable[[int], None]


class BenchError(HubdError):
    """The benchmark could not run or finish: a child did not start, delivery timed out."""


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


@dataclass(slots=True)
class LoadResult:
    """What the client side saw: timings of accepted messages, refusals by reply."""

    latencies: list[float] = field(default_factory=list)
    refusals: Counter[str] = field(default_factory=Counter)
    started_at: float = 0.0  # wall clock, to compare with delivered files' mtimes
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class BenchReport:
    """The figures of one run; None where the mode cannot measure them."""

    mode: BenchMode
    target: str
    count: int
    size: int
    concurrency: int
    accepted: int
    refused: int
    refusals: Mapping[str, int]
    accept_seconds: float
    accepted_per_second: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    delivered: int | None = None
    delivery_seconds: float | None = None
    delivered_per_second: float | None = None
    commits: int | None = None
    enqueued: int | None = None
    commits_per_second: float | None = None
    messages_per_commit: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        data = {name: getattr(self, name) for name in self.__slots__}
        data["mode"] = str(self.mode)
        data["refusals"] = dict(self.refusals)
        return data


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of `values`, interpolating between ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0-100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


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


def summarise(
    settings: BenchSettings,
    target: str,
    load: LoadResult,
    *,
    delivered_at: float | None = None,
    delivered: int | None = None,
    counters: Mapping[str, int] | None = None,
) -> BenchReport:
    """Turn the raw timings and counters of a run into its report."""
    accepted = len(load.latencies)
    seconds = max(load.seconds, 1e-9)
    delivery_seconds = None if delivered_at is None else delivered_at - load.started_at
    commits = None if counters is None else counters.get("commits:enqueue", 0)
    enqueued = None if counters is None else counters.get("ops:enqueue", 0)
    return BenchReport(
        mode=settings.mode,
        target=target,
        count=settings.count,
        size=settings.size,
        concurrency=settings.concurrency,
        accepted=accepted,
        refused=sum(load.refusals.values()),
        refusals=dict(load.refusals),
        accept_seconds=load.seconds,
        accepted_per_second=accepted / seconds,
        latency_p50_ms=percentile(load.latencies, 50) * 1000 if accepted else None,
        latency_p99_ms=percentile(load.latencies, 99) * 1000 if accepted else None,
        delivered=delivered,
        delivery_seconds=delivery_seconds,
        delivered_per_second=(
            delivered / max(delivery_seconds, 1e-9)
            if delivered is not None and delivery_seconds is not None
            else None
        ),
        commits=commits,
        enqueued=enqueued,
        commits_per_second=None if commits is None else commits / seconds,
        messages_per_commit=enqueued / commits if commits and enqueued is not None else None,
    )


def format_report(report: BenchReport) -> str:
    """The report as lines for a terminal."""
    lines = [
        f"hubd bench: {report.count} messages of {report.size} bytes over "
        f"{report.concurrency} session{'' if report.concurrency == 1 else 's'} to"
        f" {report.target} ({report.mode})",
        f"{'accepted':<20}{report.accepted}/{report.count} in {report.accept_seconds:.2f} s"
        f" = {report.accepted_per_second:.1f} msg/s",
    ]
    if report.latency_p50_ms is not None and report.latency_p99_ms is not None:
        lines.append(
            f"{'end of DATA to 250':<20}p50 {report.latency_p50_ms:.2f} ms,"
            f" p99 {report.latency_p99_ms:.2f} ms"
        )
    lines.extend(
        f"{'refused':<20}{count} x {reply}" for reply, count in sorted(report.refusals.items())
    )
    if report.delivered is not None and report.delivery_seconds is not None:
        lines.append(
            f"{'delivered':<20}{report.delivered} within {report.delivery_seconds:.2f} s of the"
            f" start = {report.delivered_per_second or 0:.1f} msg/s"
        )
    if report.commits is not None and report.commits_per_second is not None:
        lines.append(
            f"{'group commit':<20}{report.commits} commits for {report.enqueued} messages:"
            f" {report.commits_per_second:.1f} commits/s vs {report.accepted_per_second:.1f}"
            f" msg/s = {report.messages_per_commit or 0:.2f} messages per commit"
        )
    return "\n".join(lines)


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


def _greets(address: HostPort) -> bool:
    return smtp_greets(address.host, address.port)


@contextmanager
def _child(argv: list[str], address: HostPort, log: Path) -> Iterator[Callable[[], bool]]:
    """Run `hubd …` as a subprocess, greeting on `address`; yield its liveness check."""
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "hubd", *argv], stdout=output, stderr=subprocess.STDOUT
        )

    def alive() -> bool:
        if process.poll() is not None:
            raise BenchError(f"hubd {argv[0]} exited with {process.returncode}; see {log}")
        return True

    try:
        wait_until(
            lambda: alive() and _greets(address),
            START_TIMEOUT,
            f"hubd {argv[0]} to greet on {address}",
        )
        yield alive
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _write_node_config(directory: Path, address: HostPort) -> Path:
    return write_config(
        directory / "hubd.toml",
        {
            "local_domains": [DOMAIN],
            "node": {"name": "bench", "hostname": "bench.hubd.test", "data_dir": directory},
            "smtp": {"listen": [str(address)], "trusted_networks": ["127.0.0.0/8"]},
        },
    )


def _count_delivered(folder: Path) -> tuple[int, float]:
    """How many files are in a Maildir's new/ and the latest of their mtimes."""
    try:
        entries = [entry.stat().st_mtime for entry in os.scandir(folder) if entry.is_file()]
    except FileNotFoundError:
        return 0, 0.0
    return len(entries), max(entries, default=0.0)


def wait_for_delivery(
    folder: Path, count: int, timeout: float, progress: Progress, alive: Callable[[], bool]
) -> float:
    """Poll a Maildir's new/ until `count` files are there; when the last one was written."""
    seen = 0

    def done() -> bool:
        nonlocal seen
        alive()
        found, _ = _count_delivered(folder)
        progress(found - seen)
        seen = found
        return found >= count

    try:
        wait_until(done, timeout, f"{count} deliveries into {folder}")
    except TimeoutError as error:
        raise BenchError(f"{error} ({seen} arrived)") from None
    return _count_delivered(folder)[1]


@contextmanager
def _bar(label: str, total: int, shown: bool) -> Iterator[Progress]:
    # On stderr, so that the report (or its JSON) on stdout is never interleaved with it.
    if not shown:
        yield lambda _: None
        return
    steps = max(1, total // 200)  # redraw at most 200 times; drawing costs the client CPU
    with typer.progressbar(
        length=total, label=label, file=sys.stderr, update_min_steps=steps
    ) as bar:
        yield bar.update


def _load(settings: BenchSettings, target: HostPort, show_progress: bool) -> LoadResult:
    with _bar("sending   ", settings.count, show_progress) as progress:
        return asyncio.run(
            drive_load(
                target,
                count=settings.count,
                size=settings.size,
                concurrency=settings.concurrency,
                progress=progress,
            )
        )


def run_bench(settings: BenchSettings, *, show_progress: bool = False) -> BenchReport:
    """Run the load against the target of `settings.mode` and report what was measured."""
    if settings.server is not None:
        load = _load(settings, settings.server, show_progress)
        return summarise(settings, str(settings.server), load)
    with ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hubd-bench-")))
        host, port = free_loopback_address()
        target = HostPort(host=host, port=port)
        log = directory / "child.log"
        if settings.mode is BenchMode.CEILING:
            with _child(["bench-sink", "--listen", str(target)], target, log):
                load = _load(settings, target, show_progress)
            return summarise(settings, str(target), load)
        config = load_config(_write_node_config(directory, target))
        folder = config.mailbox_dir / DOMAIN / mailbox_dirname(RECIPIENT.partition("@")[0])
        with _child(["serve", "-c", str(directory / "hubd.toml")], target, log) as alive:
            load = _load(settings, target, show_progress)
            accepted = len(load.latencies)
            with _bar("delivering", accepted, show_progress) as progress:
                delivered_at = wait_for_delivery(
                    folder / "new", accepted, settings.timeout, progress, alive
                )
            delivered = _count_delivered(folder / "new")[0]
        counters = read_counters(config.node.data_dir / "queue.db")
        return summarise(
            settings,
            str(target),
            load,
            delivered_at=delivered_at,
            delivered=delivered,
            counters=counters,
        )


async def _discard(message: ReceivedMessage) -> None:
    """The sink's intake: the message is accepted and forgotten."""


async def serve_sink(listen: HostPort, on_ready: Callable[[HostPort], None]) -> None:
    """Serve SMTP with hubd's listener and handler, storing nothing, until SIGTERM or SIGINT."""
    config = Config.model_validate({"local_domains": [DOMAIN], "smtp": {"listen": [str(listen)]}})
    smtp = config.smtp
    handler = InboundHandler(
        hostname="sink.hubd.test",
        policy=RelayPolicy(
            router=Router(config.local_domains, RouteTable(config.routes)),
            trusted_networks=smtp.trusted_networks,
            catch_all=True,
            known_recipients=frozenset(),
        ),
        limits=InboundLimits(smtp.max_recipients, smtp.max_received_headers),
        intake=_discard,
        clock=time.time,
        rng=random.Random(),
    )
    registry = SessionRegistry(smtp.max_sessions)
    listener = await start_listener(
        listen,
        handler,
        registry,
        hostname="sink.hubd.test",
        max_message_size=smtp.max_message_size,
        max_line_length=smtp.max_line_length,
        idle_timeout=smtp.idle_timeout.total_seconds(),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    on_ready(listener.address)
    await stop.wait()
    listener.server.close()
    await registry.drain(5.0)
    await listener.server.wait_closed()
