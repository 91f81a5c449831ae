"""Reading /proc for the bench: stat lines, status values, and which processes are an MTA's."""

from __future__ import annotations

import os

import pytest

from hubd.bench.usage import (
    ProcStat,
    cpu_seconds,
    members,
    parse_kib,
    parse_stat,
    process_name,
    read_stats,
)

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int, ppid: int, pgrp: int, ticks: int = 0) -> ProcStat:
    return ProcStat(pid, f"p{pid}", "S", ppid, pgrp, ticks)


class TestParse:
    def test_stat_line(self) -> None:
        """pid, name, state, parent, group and the four CPU counters are read."""
        line = (
            "4242 (smtpd) S 4200 4200 4200 0 -1 4194560 1197 0 0 0 "
            "7 3 11 13 20 0 1 0 405702 3133440 360 18446744073709551615"
        )
        stat = parse_stat(line)
        assert (stat.pid, stat.comm, stat.state, stat.ppid, stat.pgrp) == (
            4242,
            "smtpd",
            "S",
            4200,
            4200,
        )
        assert stat.cpu_ticks == 7 + 3 + 11 + 13

    def test_name_with_spaces_and_parentheses(self) -> None:
        """A process may call itself anything; the last ')' ends its name."""
        line = "7 (a (b) c) R 1 7 7 0 -1 0 0 0 0 0 1 2 3 4 20 0 1 0 5 6 7 8"
        stat = parse_stat(line)
        assert stat.comm == "a (b) c"
        assert (stat.state, stat.ppid, stat.cpu_ticks) == ("R", 1, 10)

    def test_own_stat(self) -> None:
        """This process's own stat parses, and it is among all processes read."""
        own = [s for s in read_stats() if s.pid == os.getpid()]
        assert len(own) == 1
        assert own[0].ppid == os.getppid()

    @pytest.mark.parametrize(
        ("key", "expected"),
        [("VmHWM", 9000), ("VmRSS", 8000), ("Pss", None)],
        ids=["peak", "current", "absent"],
    )
    def test_kib_values(self, key: str, expected: int | None) -> None:
        """`Key:  N kB` lines are read in KiB; a missing key is None."""
        text = "Name:\tsmtpd\nVmHWM:\t    9000 kB\nVmRSS:\t    8000 kB\n"
        assert parse_kib(text, key) == expected


class TestMembers:
    def test_tree_and_group(self) -> None:
        """The root's descendants and its group count; its parent and strangers do not."""
        stats = [
            _stat(1, 0, 1),
            _stat(100, 1, 100),  # the root, leading its group
            _stat(101, 100, 100),  # a child
            _stat(102, 101, 100),  # a grandchild
            _stat(103, 1, 100),  # left the tree (reparented to init) but is in the group
            _stat(104, 103, 104),  # the child of that one, in a group of its own
            _stat(200, 1, 200),  # a stranger
        ]
        assert members(stats, 100) == {100, 101, 102, 103}

    def test_root_not_leading_a_group(self) -> None:
        """A root that does not lead its group brings only its tree, not its group."""
        stats = [_stat(50, 1, 50), _stat(60, 50, 50), _stat(61, 60, 50), _stat(70, 50, 50)]
        assert members(stats, 60) == {60, 61}

    def test_gone_root(self) -> None:
        """A root that has ended has no members."""
        assert members([_stat(5, 1, 5)], 9) == set()

    def test_cpu_seconds_of_members_only(self) -> None:
        """CPU seconds add the ticks of the chosen processes, in seconds."""
        stats = [_stat(1, 0, 1, ticks=_TICKS * 5), _stat(2, 1, 1, ticks=_TICKS * 2)]
        assert cpu_seconds(stats, {2}) == pytest.approx(2.0)
        assert cpu_seconds(stats, {1, 2}) == pytest.approx(7.0)


class TestProcessName:
    @pytest.mark.parametrize(
        ("comm", "cmdline", "expected"),
        [
            ("smtpd", ["smtpd", "-n", "127.0.0.1:25", "-t", "inet"], "smtpd"),
            ("python3", ["/usr/bin/python3", "-m", "hubd", "serve", "-c", "x.toml"], "hubd serve"),
            ("python3", ["python3", "-m", "hubd.worker", "delivery-2"], "hubd.worker delivery"),
            ("python3", ["python3", "-m", "hubd.worker", "acceptor-10"], "hubd.worker acceptor"),
            ("python3", ["python3", "-m", "mod", "-x"], "mod"),
            ("python3", ["python3", "script.py"], "python3"),
            ("python3", [], "python3"),
        ],
        ids=["not-python", "serve", "delivery", "acceptor", "module-only", "script", "gone"],
    )
    def test_names(self, comm: str, cmdline: list[str], expected: str) -> None:
        """Python processes are named by module and role, without the role's number."""
        assert process_name(comm, cmdline) == expected
