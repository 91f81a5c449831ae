"""CPU time and memory of every process of an MTA, read from Linux's /proc.

Owns: which processes belong to an MTA (the tree under its root process, and the process
group the root leads), their CPU seconds (including reaped children's), and their peak
memory, sampled by a thread while the load runs.
Public: ProcStat, Usage, ProcessPeak, parse_stat(), parse_kib(), process_name(), members(),
read_stats(), cpu_seconds(), UsageSampler.
Failures: none raised for a process that vanishes between reads: it is skipped.
Limits: Linux only. CPU of a process that leaves the tree (a double fork reaped by init)
is lost when it ends. A process's peak RSS is its own high-water mark (VmHWM), read at the
last sample before it exits; the sums (RSS, PSS) are of processes alive at one sample.
See also: hubd/bench/compare.py, proc(5) (stat, status, smaps_rollup).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")
_ROLE_NUMBER = re.compile(r"-\d+$")  # acceptor-1, delivery-2: the kind without the number
_PROC = Path("/proc")


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of /proc/PID/stat that the bench uses."""

    pid: int
    comm: str
    state: str
    ppid: int
    pgrp: int
    cpu_ticks: int  # utime + stime + cutime + cstime: its own CPU and its reaped children's


@dataclass(frozen=True, slots=True)
class ProcessPeak:
    """The processes of one name (comm) seen during a run, and the highest peak RSS of any."""

    count: int
    peak_rss_kib: int


@dataclass(frozen=True, slots=True)
class Usage:
    """What an MTA's processes used between the start and the stop of a sampler."""

    cpu_seconds: float
    peak_rss_kib: int  # the highest sum of RSS of the processes alive at one sample
    peak_pss_kib: int  # the same with shared pages divided among their users (smaps_rollup)
    processes: Mapping[str, ProcessPeak] = field(default_factory=dict)


def parse_stat(text: str) -> ProcStat:
    """Parse one /proc/PID/stat line (the name in parentheses may hold spaces or ')')."""
    head, _, tail = text.rpartition(")")
    pid, _, comm = head.partition(" (")
    fields = tail.split()
    # proc(5): fields 3-5 are state, ppid, pgrp; 14-17 utime, stime, cutime, cstime.
    ticks = sum(int(value) for value in fields[11:15])
    return ProcStat(int(pid), comm, fields[0], int(fields[1]), int(fields[2]), ticks)


def parse_kib(text: str, key: str) -> int | None:
    """The value of a "Key:  123 kB" line of /proc/PID/status or smaps_rollup, in KiB."""
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0])
    return None


def process_name(comm: str, cmdline: list[str]) -> str:
    """What to call a process in the report: its name, or for Python its module and role.

    A node's processes are all "python3"; `python -m hubd.worker delivery-2` becomes
    "hubd.worker delivery" and `python -m hubd serve -c …` "hubd serve", so that kinds of
    process are told apart and processes of one kind are counted together.
    """
    if not comm.startswith("python") or "-m" not in cmdline:
        return comm
    words = cmdline[cmdline.index("-m") + 1 :][:2]
    if len(words) == 2 and words[1].startswith("-"):
        words = words[:1]
    return " ".join(_ROLE_NUMBER.sub("", word) for word in words) or comm


def members(stats: Iterable[ProcStat], root: int) -> set[int]:
    """The root, its descendants, and the members of its process group if it leads one."""
    listed = list(stats)
    children: dict[int, list[int]] = {}
    group: set[int] = set()
    leads_group = any(s.pid == root and s.pgrp == root for s in listed)
    for stat in listed:
        children.setdefault(stat.ppid, []).append(stat.pid)
        if leads_group and stat.pgrp == root:
            group.add(stat.pid)
    found: set[int] = set()
    todo = [root] if any(s.pid == root for s in listed) else []
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found | group


def read_stats() -> list[ProcStat]:
    """Every process's stat, skipping those that end while they are read."""
    stats = []
    for entry in os.scandir(_PROC):
        if entry.name.isdigit():
            try:
                stats.append(parse_stat((_PROC / entry.name / "stat").read_text()))
            except (OSError, ValueError, IndexError):
                continue
    return stats


def cpu_seconds(stats: Iterable[ProcStat], pids: set[int]) -> float:
    """CPU seconds so far of these processes and of the children they have reaped."""
    return sum(s.cpu_ticks for s in stats if s.pid in pids) / _TICKS


def _memory(pid: int) -> tuple[int, int, int] | None:
    """(peak RSS, RSS, PSS) in KiB, or None for a process gone or with no memory (a zombie)."""
    try:
        status = (_PROC / str(pid) / "status").read_text()
        rollup = (_PROC / str(pid) / "smaps_rollup").read_text()
    except OSError:
        return None
    peak, rss, pss = (
        parse_kib(status, "VmHWM"),
        parse_kib(status, "VmRSS"),
        parse_kib(rollup, "Pss"),
    )
    if peak is None or rss is None or pss is None:
        return None
    return peak, rss, pss


def _cmdline(pid: int) -> list[str]:
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]


class UsageSampler:
    """Samples the processes of the tree at `root` every `interval` seconds, in a thread."""

    def __init__(self, root: int, interval: float = 0.2) -> None:
        self._root = root
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-usage", daemon=True)
        self._cpu_before = 0.0
        self._cpu_after = 0.0
        self._names: dict[int, str] = {}
        self._peaks: dict[int, int] = {}
        self._rss = 0
        self._pss = 0

    def start(self) -> None:
        """Note the CPU used so far, and start sampling memory."""
        stats = read_stats()
        self._cpu_before = cpu_seconds(stats, members(stats, self._root))
        self._sample(stats)
        self._thread.start()

    def stop(self) -> Usage:
        """Stop sampling; what the processes used since start()."""
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()
        stats = read_stats()
        self._sample(stats)
        self._cpu_after = cpu_seconds(stats, members(stats, self._root))
        return self.usage()

    def usage(self) -> Usage:
        by_name: dict[str, list[int]] = {}
        for pid, name in self._names.items():
            by_name.setdefault(name, []).append(self._peaks.get(pid, 0))
        return Usage(
            cpu_seconds=max(self._cpu_after - self._cpu_before, 0.0),
            peak_rss_kib=self._rss,
            peak_pss_kib=self._pss,
            processes={
                name: ProcessPeak(len(peaks), max(peaks)) for name, peaks in sorted(by_name.items())
            },
        )

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample(read_stats())

    def _sample(self, stats: list[ProcStat]) -> None:
        rss = pss = 0
        names = {s.pid: s.comm for s in stats}
        for pid in members(stats, self._root):
            memory = _memory(pid)
            if memory is None:
                continue
            peak, now_rss, now_pss = memory
            if pid not in self._names:
                self._names[pid] = process_name(names[pid], _cmdline(pid))
            self._peaks[pid] = max(self._peaks.get(pid, 0), peak)
            rss += now_rss
            pss += now_pss
        self._rss = max(self._rss, rss)
        self._pss = max(self._pss, pss)
