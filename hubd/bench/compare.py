"""`hubd bench --compare-postfix`: the same smtp-source load into Postfix and hubd, in turns.

Owns: the runs of a comparison (per session count, `rounds` runs of each MTA, the first of
each round alternating), each with a fresh MTA and a fresh smtp-sink on their own loopback
addresses and queues on the same filesystem; measuring inbound and end-to-end rates, CPU
and memory of every process of the MTA, and (hubd's own load) end of DATA to 250; removing
every process and file afterwards, on Ctrl-C and on failure too.
Public: check_requirements(), run_comparison(), describe_setups(), CONDITIONS.
Failures: BenchError when a run cannot start or finish (timeouts name what was waited for).
Limits: one MTA runs at a time; the bench's own processes (smtp-source, the sinks, the
sampler) share the machine with it, equally for both.
See also: hubd/bench/comparison.py (the report), hubd/bench/postfix.py, README.md (Benchmark).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import hubd
from hubd.bench.child import hubd_child
from hubd.bench.comparison import CompareReport, Mta, RunFigures, compare_runs
from hubd.bench.errors import BenchError
from hubd.bench.load import drive_load
from hubd.bench.node import (
    check_node_settings,
    merge_settings,
    queue_drained,
    relay_settings,
    write_node_config,
)
from hubd.bench.postfix import instance_settings, postfix_instance
from hubd.bench.progress import Bars
from hubd.bench.report import percentile
from hubd.bench.requirements import (
    PostfixPrograms,
    check_filesystem,
    check_reachable,
    check_root,
    filesystem_of,
    find_postfix,
)
from hubd.bench.settings import CompareSettings
from hubd.bench.smtp_sink import SmtpSink, message_ids, smtp_sink
from hubd.bench.smtp_source import run_smtp_source, source_argv
from hubd.bench.usage import Usage, UsageSampler
from hubd.config import HostPort
from hubd.errors import ConfigError
from hubd.loopback import free_loopback_address
from hubd.waiting import wait_until

CONDITIONS = (
    "durability: both fsync each message before its 250 (Postfix's cleanup fsyncs the queue"
    " file before it answers smtpd; hubd commits with SQLite synchronous=FULL)",
    "both relay over loopback to an smtp-sink of their own, by address: no DNS (Postfix:"
    " relayhost [ip]:port, smtpd_peername_lookup = no; hubd: a static route)",
    "no TLS on either side: smtp-source cannot start it and smtp-sink does not offer it",
    "logs: each writes its own to a file, not fsynced (Postfix: maillog_file by postlogd;"
    " hubd: its tracking log and stderr); the lines per message are below",
    "CPU and memory: every process of each MTA, sampled from /proc (Postfix: the master and"
    " all it starts; hubd: the node's process group), from before the load until it drained",
)


@dataclass(frozen=True, slots=True)
class _Subject:
    """A running MTA as a run sees it."""

    address: HostPort
    root_pid: int
    check_alive: Callable[[], object]
    drained: Callable[[], bool]
    logs: Callable[[], list[Path]]


def describe_setups(settings: CompareSettings, programs: PostfixPrograms) -> tuple[str, ...]:
    """How each MTA is configured, a line each; BenchError when --node-setting is not valid."""
    base = f"Debian's {programs.main_cf}" if programs.main_cf else "built-in defaults"
    prepared = ", prepared by Debian's configure-instance.sh" if programs.configure_instance else ""
    somewhere = HostPort(host="127.0.0.1", port=25)  # only the names are used
    added = ", ".join(instance_settings(Path("."), somewhere, Path("."), Path(".")))
    try:
        config = check_node_settings(settings.node_settings)
    except ConfigError as error:
        raise BenchError(f"the node's settings: {'; '.join(error.problems)}") from None
    ours = f"; from --node-setting: {settings.node_settings}" if settings.node_settings else ""
    return (
        f"Postfix: {base} and the stock {programs.master_cf} (chroot as shipped{prepared}),"
        f" plus {added}; up to {programs.destination_concurrency} connections to the sink",
        "hubd: its defaults plus smtp.listen, smtp.trusted_networks = 127.0.0.0/8,"
        f" node.data_dir and a route to the sink; up to {config.delivery.concurrency_per_hop}"
        f" connections to the sink{ours}",
    )


def check_requirements(directory: Path) -> tuple[PostfixPrograms | None, list[str]]:
    """Postfix's programs and every reason the comparison cannot run here, one line each."""
    programs, problems = find_postfix()
    problems += check_root(os.geteuid())
    if not directory.is_dir():
        problems.append(f"{directory} is not a directory (--dir)")
    else:
        problems += check_filesystem(directory, _filesystem(directory))
        problems += check_reachable(directory)
    return (programs if not problems else None), problems


def _filesystem(path: Path) -> str:
    return filesystem_of(path, Path("/proc/mounts").read_text())


def _address() -> HostPort:
    host, port = free_loopback_address()
    return HostPort(host=host, port=port)


def _log_lines(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        if path.is_file():
            with path.open("rb") as lines:
                total += sum(1 for _ in lines)
    return total


@contextmanager
def _postfix(
    programs: PostfixPrograms, root: Path, address: HostPort, sink: SmtpSink
) -> Iterator[_Subject]:
    with postfix_instance(programs, root, address, sink.address) as instance:
        pid = instance.master_pid()
        if pid is None:
            raise BenchError("the Postfix master left no pid file")
        yield _Subject(
            address, pid, instance.check_alive, instance.drained, lambda: [instance.maillog]
        )


@contextmanager
def _hubd(
    settings: CompareSettings, root: Path, address: HostPort, sink: SmtpSink
) -> Iterator[_Subject]:
    path = root / "hubd.toml"
    wanted = merge_settings(
        relay_settings(root / "data", address, sink.address), settings.node_settings
    )
    try:
        config = write_node_config(path, wanted)
    except ConfigError as error:
        raise BenchError(f"the node's settings: {'; '.join(error.problems)}") from None
    log = root / "node.log"
    with hubd_child(["serve", "-c", str(path)], address, log) as child:
        tracking = config.node.data_dir / "tracking"
        yield _Subject(
            address,
            child.pid,
            child.check_alive,
            lambda: queue_drained(config),
            lambda: [log, *sorted(tracking.glob("*.jsonl"))],
        )


def _wait_drained(subject: _Subject, timeout: float, what: str) -> None:
    def drained() -> bool:
        subject.check_alive()
        return subject.drained()

    try:
        wait_until(drained, timeout, f"{what}'s queue to empty")
    except TimeoutError as error:
        raise BenchError(str(error)) from None


def _wait_sink(sink: SmtpSink, count: int, timeout: float, subject: _Subject, what: str) -> float:
    def alive() -> None:
        subject.check_alive()
        sink.check_alive()

    try:
        return sink.wait_for(count, timeout, alive)
    except TimeoutError as error:
        raise BenchError(f"{what}: after {timeout:.0f} s {error} at the sink") from None


@dataclass(frozen=True, slots=True)
class _Run:
    """Which run this is: the MTA, the session count, the round, and where its files go."""

    mta: Mta
    sessions: int
    round: int
    settings: CompareSettings
    programs: PostfixPrograms
    root: Path

    @property
    def label(self) -> str:
        return f"{self.round}/{self.settings.rounds} {self.mta} {self.sessions}s"


@dataclass(frozen=True, slots=True)
class _Measured:
    usage: Usage
    inbound_seconds: float
    end_to_end_seconds: float


def _smtp_source_pass(run: _Run, subject: _Subject, sink: SmtpSink, bars: Bars) -> _Measured:
    """smtp-source's load, measured: CPU and memory from before it until the queue is empty."""
    settings = run.settings
    sampler = UsageSampler(subject.root_pid)
    sending = bars.bar(f"{run.label} accepted", settings.count)
    relaying = bars.bar(f"{run.label} relayed", settings.count)
    sink.follow(relaying.set)
    sampler.start()
    try:
        argv = source_argv(
            run.programs.smtp_source,
            subject.address,
            sessions=run.sessions,
            count=settings.count,
            size=settings.size,
        )
        source = run_smtp_source(argv, run.root / "source.log", settings.timeout, sending.set)
        reached = _wait_sink(sink, settings.count, settings.timeout, subject, run.label)
        _wait_drained(subject, settings.timeout, run.label)
    finally:
        usage = sampler.stop()
        sink.follow(None)
        sending.close()
        relaying.close()
    return _Measured(usage, source.seconds, reached - source.started)


def _latency_pass(run: _Run, subject: _Subject, sink: SmtpSink, bars: Bars) -> list[float]:
    """hubd's own load over the run's sessions: the time from each end of DATA to its 250."""
    settings = run.settings
    bar = bars.bar(f"{run.label} latency", settings.count)
    already = sink.received
    try:
        load = asyncio.run(
            drive_load(
                subject.address,
                count=settings.count,
                size=settings.size,
                concurrency=run.sessions,
                progress=bar.advance,
            )
        )
    finally:
        bar.close()
    if load.refusals:
        refused = ", ".join(f"{n} x {reply}" for reply, n in load.refusals.most_common(3))
        raise BenchError(f"{run.label}: hubd's load generator was refused: {refused}")
    _wait_sink(sink, already + len(load.latencies), settings.timeout, subject, run.label)
    _wait_drained(subject, settings.timeout, run.label)
    return load.latencies


def _run(run: _Run, bars: Bars) -> RunFigures:
    """One run: a fresh sink and MTA, smtp-source's load, then (optionally) hubd's own."""
    settings, programs = run.settings, run.programs
    run.root.mkdir()
    load_average = os.getloadavg()
    with ExitStack() as stack:
        sink = stack.enter_context(
            smtp_sink(
                programs.smtp_sink,
                _address(),
                user=programs.mail_owner,
                log=run.root / "sink.log",
                dump=run.root / "sink" if settings.verify else None,
            )
        )
        subject = stack.enter_context(
            _postfix(programs, run.root / "postfix", _address(), sink)
            if run.mta is Mta.POSTFIX
            else _hubd(settings, run.root, _address(), sink)
        )
        measured = _smtp_source_pass(run, subject, sink, bars)
        latencies = _latency_pass(run, subject, sink, bars) if settings.latency else []
        received, log_lines = sink.received, _log_lines(subject.logs())
        distinct = len(set(message_ids(sink.dump))) if sink.dump is not None else None
    return RunFigures(
        mta=run.mta,
        sessions=run.sessions,
        round=run.round,
        count=settings.count,
        inbound_seconds=measured.inbound_seconds,
        end_to_end_seconds=measured.end_to_end_seconds,
        cpu_seconds=measured.usage.cpu_seconds,
        peak_rss_kib=measured.usage.peak_rss_kib,
        peak_pss_kib=measured.usage.peak_pss_kib,
        processes=measured.usage.processes,
        received=received,
        expected=settings.count + len(latencies),
        distinct=distinct,
        log_lines=log_lines,
        latency_p50_ms=percentile(latencies, 50) * 1000 if latencies else None,
        latency_p99_ms=percentile(latencies, 99) * 1000 if latencies else None,
        load_average=load_average,
    )


def _order(round_: int) -> tuple[Mta, Mta]:
    """Postfix first in odd rounds, hubd first in even ones, so that drift hits both alike."""
    return (Mta.POSTFIX, Mta.HUBD) if round_ % 2 else (Mta.HUBD, Mta.POSTFIX)


def run_comparison(
    settings: CompareSettings, programs: PostfixPrograms, *, show_progress: bool | None = None
) -> CompareReport:
    """Run every round at every session count; the medians and ratios of what was measured."""
    setups = describe_setups(settings, programs)
    base = Path(tempfile.mkdtemp(prefix="hubd-bench-", dir=settings.directory))
    base.chmod(0o755)  # Postfix's unprivileged processes must reach their queue inside
    load_before = os.getloadavg()
    try:
        comparisons = []
        with Bars(show_progress) as bars:
            for sessions in settings.sessions:
                runs = [
                    _run(
                        _Run(
                            mta,
                            sessions,
                            round_,
                            settings,
                            programs,
                            base / f"{sessions}-{round_}-{mta}",
                        ),
                        bars,
                    )
                    for round_ in range(1, settings.rounds + 1)
                    for mta in _order(round_)
                ]
                comparisons.append(compare_runs(sessions, runs))
        return CompareReport(
            count=settings.count,
            size=settings.size,
            rounds=settings.rounds,
            postfix_version=programs.version,
            hubd_version=hubd.__version__,
            directory=str(base if settings.keep else settings.directory),
            filesystem=_filesystem(base),
            cpus=os.cpu_count() or 1,
            load_before=load_before,
            load_after=os.getloadavg(),
            conditions=(*CONDITIONS, *setups),
            comparisons=tuple(comparisons),
        )
    finally:
        if not settings.keep:
            shutil.rmtree(base, ignore_errors=True)
