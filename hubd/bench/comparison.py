"""The side-by-side report of `hubd bench --compare-postfix`: medians, ratios, a table.

Owns: the figures of one run of one MTA, their medians over the rounds, the ratios
hubd / Postfix, and printing them as a table or JSON-ready data. Pure: no I/O.
Public: Mta, RunFigures, Side, SessionComparison, CompareReport, FIGURES, median(),
ratio(), per_message_ms(), compare_runs(), format_comparison().
Failures: ValueError from median() of no values.
See also: hubd/bench/compare.py (where the figures come from), README.md (Benchmark).
"""

from __future__ import annotations

import enum
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hubd.bench.usage import ProcessPeak


class Mta(enum.StrEnum):
    POSTFIX = "postfix"
    HUBD = "hubd"


@dataclass(frozen=True, slots=True)
class RunFigures:
    """What one run of one MTA measured."""

    mta: Mta
    sessions: int
    round: int
    count: int
    inbound_seconds: float  # smtp-source, spawn to exit
    end_to_end_seconds: float  # smtp-source's spawn to the sink's last message
    cpu_seconds: float  # every process of the MTA, from before the load until it drained
    peak_rss_kib: int
    peak_pss_kib: int
    processes: Mapping[str, ProcessPeak]
    received: int  # by the sink, all passes
    expected: int  # sent and accepted, all passes
    distinct: int | None = None  # distinct Message-Ids at the sink (--verify)
    log_lines: int = 0  # lines the MTA logged during the run, all passes
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    load_average: tuple[float, float, float] = (0.0, 0.0, 0.0)  # at the start of the run

    @property
    def inbound_per_second(self) -> float:
        return self.count / max(self.inbound_seconds, 1e-9)

    @property
    def end_to_end_per_second(self) -> float:
        return self.count / max(self.end_to_end_seconds, 1e-9)

    @property
    def cpu_ms_per_message(self) -> float:
        return per_message_ms(self.cpu_seconds, self.count)

    @property
    def cores_busy(self) -> float:
        """CPU seconds over end-to-end seconds: how much of the machine the MTA got and used."""
        return self.cpu_seconds / max(self.end_to_end_seconds, 1e-9)

    @property
    def peak_rss_mib(self) -> float:
        return self.peak_rss_kib / 1024

    @property
    def peak_pss_mib(self) -> float:
        return self.peak_pss_kib / 1024

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {name: getattr(self, name) for name in self.__slots__}
        data["mta"] = str(self.mta)
        data["processes"] = {
            name: {"count": peak.count, "peak_rss_kib": peak.peak_rss_kib}
            for name, peak in self.processes.items()
        }
        data["load_average"] = list(self.load_average)
        for name, _, _ in FIGURES:
            data[name] = getattr(self, name)
        return data


# (attribute of RunFigures, label, digits): the figures whose medians are compared.
FIGURES: tuple[tuple[str, str, int], ...] = (
    ("inbound_per_second", "inbound msgs/s (smtp-source)", 0),
    ("end_to_end_per_second", "end-to-end msgs/s (to the sink)", 0),
    ("cpu_ms_per_message", "CPU ms per message, all processes", 2),
    ("cores_busy", "cores busy (CPU s / end-to-end s)", 2),
    ("peak_rss_mib", "peak RSS MiB, sum of processes", 1),
    ("peak_pss_mib", "peak PSS MiB, sum of processes", 1),
    ("latency_p50_ms", "end of DATA to 250, p50 ms", 1),
    ("latency_p99_ms", "end of DATA to 250, p99 ms", 1),
)


def median(values: Iterable[float]) -> float:
    """The median (the mean of the middle two for an even count)."""
    listed = list(values)
    if not listed:
        raise ValueError("median of no values")
    return float(statistics.median(listed))


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def per_message_ms(cpu_seconds: float, count: int) -> float:
    """CPU milliseconds per message."""
    if count < 1:
        raise ValueError("CPU per message of no messages")
    return cpu_seconds * 1000 / count


@dataclass(frozen=True, slots=True)
class Side:
    """One MTA's runs at one session count: each figure's median, lowest and highest."""

    runs: tuple[RunFigures, ...]
    medians: Mapping[str, float | None]
    ranges: Mapping[str, tuple[float, float] | None]


def _side(runs: Sequence[RunFigures]) -> Side:
    medians: dict[str, float | None] = {}
    ranges: dict[str, tuple[float, float] | None] = {}
    for name, _, _ in FIGURES:
        values = [v for v in (getattr(run, name) for run in runs) if v is not None]
        medians[name] = median(values) if values else None
        ranges[name] = (min(values), max(values)) if values else None
    return Side(tuple(runs), medians, ranges)


@dataclass(frozen=True, slots=True)
class SessionComparison:
    """Postfix and hubd at one session count, and hubd / Postfix of each median."""

    sessions: int
    postfix: Side
    hubd: Side
    ratios: Mapping[str, float | None]

    def as_dict(self) -> dict[str, Any]:
        def side(value: Side) -> dict[str, Any]:
            return {
                "medians": dict(value.medians),
                "ranges": {k: list(v) if v else None for k, v in value.ranges.items()},
            }

        return {
            "sessions": self.sessions,
            "postfix": side(self.postfix),
            "hubd": side(self.hubd),
            "ratios": dict(self.ratios),
            "runs": [run.as_dict() for run in (*self.postfix.runs, *self.hubd.runs)],
        }


def compare_runs(sessions: int, runs: Iterable[RunFigures]) -> SessionComparison:
    """Medians of each MTA's runs at `sessions`, and their ratios hubd / Postfix."""
    listed = [run for run in runs if run.sessions == sessions]
    postfix = _side([run for run in listed if run.mta is Mta.POSTFIX])
    hubd = _side([run for run in listed if run.mta is Mta.HUBD])
    if not postfix.runs or not hubd.runs:
        raise ValueError(f"no runs of both MTAs at {sessions} sessions")
    ratios = {name: ratio(hubd.medians[name], postfix.medians[name]) for name, _, _ in FIGURES}
    return SessionComparison(sessions, postfix, hubd, ratios)


@dataclass(frozen=True, slots=True)
class CompareReport:
    """A whole comparison: what was run, where, on what, and one table per session count."""

    count: int
    size: int
    rounds: int
    postfix_version: str
    hubd_version: str
    directory: str
    filesystem: str
    cpus: int
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    conditions: tuple[str, ...]
    comparisons: tuple[SessionComparison, ...] = field(default_factory=tuple)

    def every_message_once(self) -> bool:
        """True when every sink received each accepted message exactly once (as far as known)."""
        runs = [run for c in self.comparisons for run in (*c.postfix.runs, *c.hubd.runs)]
        return all(_once(run) for run in runs)

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": "compare-postfix",
            "count": self.count,
            "size": self.size,
            "rounds": self.rounds,
            "sessions": [c.sessions for c in self.comparisons],
            "postfix_version": self.postfix_version,
            "hubd_version": self.hubd_version,
            "directory": self.directory,
            "filesystem": self.filesystem,
            "cpus": self.cpus,
            "load_before": list(self.load_before),
            "load_after": list(self.load_after),
            "conditions": list(self.conditions),
            "comparisons": [c.as_dict() for c in self.comparisons],
        }


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _cell(side: Side, name: str, digits: int) -> str:
    spread = side.ranges[name]
    text = _number(side.medians[name], digits)
    if spread is not None and len(side.runs) > 1:
        text += f" ({_number(spread[0], digits)}-{_number(spread[1], digits)})"
    return text


def _processes(side: Side) -> str:
    """Each kind of process: the most seen in one run, and the highest peak RSS of any."""
    kinds: dict[str, tuple[int, int]] = {}
    for run in side.runs:
        for name, peak in run.processes.items():
            count, rss = kinds.get(name, (0, 0))
            kinds[name] = (max(count, peak.count), max(rss, peak.peak_rss_kib))
    return ", ".join(
        f"{name} ({count}) {rss / 1024:.1f}" for name, (count, rss) in sorted(kinds.items())
    )


def _sessions(count: int) -> str:
    return f"{count} session{'' if count == 1 else 's'}"


def _table(comparison: SessionComparison, postfix_label: str, hubd_label: str) -> list[str]:
    rows: list[tuple[str, str, str, str]] = [
        (_sessions(comparison.sessions), postfix_label, hubd_label, "hubd/Postfix")
    ]
    for name, label, digits in FIGURES:
        rows.append(
            (
                label,
                _cell(comparison.postfix, name, digits),
                _cell(comparison.hubd, name, digits),
                _number(comparison.ratios[name], 2),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    for name, side in (("Postfix", comparison.postfix), ("hubd", comparison.hubd)):
        lines.append(f"{name}: peak RSS MiB by process (how many): {_processes(side)}")
        lines.append(f"{name}: {_deliveries(side)}")
    return lines


def _once(run: RunFigures) -> bool:
    """The sink received each accepted message exactly once (as far as the run checked)."""
    return run.received == run.expected and run.distinct in (None, run.expected)


def _deliveries(side: Side) -> str:
    """What the sinks received against what was accepted, and the log lines per message."""
    received = sum(run.received for run in side.runs)
    expected = sum(run.expected for run in side.runs)
    text = f"the sinks received {received:,} of {expected:,} messages accepted"
    if all(run.distinct is not None for run in side.runs):
        text += f", {sum(run.distinct or 0 for run in side.runs):,} distinct"
    if not all(_once(run) for run in side.runs):
        text += " (NOT EVERY MESSAGE EXACTLY ONCE)"
    lines = sum(run.log_lines for run in side.runs)
    return text + f"; {lines / max(expected, 1):.1f} log lines per message"


def format_comparison(report: CompareReport) -> str:
    """The report as lines for a terminal: the conditions, then a table per session count."""
    lines = [
        f"hubd bench --compare-postfix: {report.count} messages of {report.size} bytes of body"
        f" (smtp-source -l), {report.rounds} round{'s' if report.rounds != 1 else ''} of each"
        " MTA per session count, alternating which goes first",
        f"queues in {report.directory} ({report.filesystem}); {report.cpus} CPUs; load average"
        f" {' '.join(f'{v:.2f}' for v in report.load_before)} before,"
        f" {' '.join(f'{v:.2f}' for v in report.load_after)} after",
        *(f"- {condition}" for condition in report.conditions),
        "each figure: the median over the rounds (lowest-highest)",
    ]
    for comparison in report.comparisons:
        lines.append("")
        lines.extend(
            _table(comparison, f"Postfix {report.postfix_version}", f"hubd {report.hubd_version}")
        )
    return "\n".join(lines)
