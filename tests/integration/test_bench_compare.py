"""`hubd bench --compare-postfix` as a user runs it, and the process accounting under it.

The comparison starts a private Postfix instance (`postfix -c DIR`) and a hubd node, each
relaying to its own smtp-sink, so it needs Postfix's programs and root; without them it is
skipped with the reason (`make test` installs Postfix through scripts/install-test-deps).
Its queues go under /var/tmp, as a user's would: pytest's tmp_path is closed to Postfix's
unprivileged processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubd.bench.compare import check_requirements
from hubd.bench.usage import UsageSampler

pytestmark = pytest.mark.integration

_, PROBLEMS = check_requirements(Path("/var/tmp"))
needs_postfix_and_root = pytest.mark.skipif(
    bool(PROBLEMS), reason="; ".join(PROBLEMS) or "the comparison can run"
)


def _hubd(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hubd", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def bench_dir() -> Iterator[Path]:
    """A directory of the test's own under /var/tmp, open to Postfix's processes."""
    with tempfile.TemporaryDirectory(prefix="hubd-test-bench-", dir="/var/tmp") as name:
        Path(name).chmod(0o755)
        yield Path(name)


def _mentioning(text: str) -> list[int]:
    """Live processes whose command line or environment mentions `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            seen = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if text.encode() in seen and state != "Z":
            found.append(int(entry.name))
    return found


@needs_postfix_and_root
class TestComparePostfix:
    def test_tiny_comparison_end_to_end(self, bench_dir: Path) -> None:
        """20 messages over 2 sessions reach each MTA's sink exactly once; nothing is left."""
        done = _hubd(
            "bench", "--compare-postfix", "--json", "--count", "20", "--sessions", "2",
            "--rounds", "1", "--verify", "--dir", str(bench_dir),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["mode"] == "compare-postfix"
        assert (report["count"], report["size"], report["rounds"]) == (20, 4096, 1)
        assert report["sessions"] == [2]
        assert report["filesystem"] not in ("tmpfs", "ramfs")
        assert len(report["load_before"]) == 3
        (comparison,) = report["comparisons"]
        assert comparison["sessions"] == 2
        figures = set(comparison["ratios"])
        assert {"inbound_per_second", "end_to_end_per_second", "cpu_ms_per_message"} <= figures
        assert {"peak_rss_mib", "latency_p50_ms", "latency_p99_ms"} <= figures
        for side in ("postfix", "hubd"):
            medians = comparison[side]["medians"]
            assert set(medians) == figures
            assert all(isinstance(medians[name], float) for name in figures), medians
        runs = {run["mta"]: run for run in comparison["runs"]}
        assert set(runs) == {"postfix", "hubd"}
        for mta, run in runs.items():
            # smtp-source's 20 and the latency pass's 20, each received once.
            assert run["expected"] == 40, mta
            assert run["received"] == 40, mta
            assert run["distinct"] == 40, mta
            if mta == "hubd":
                # CPU is counted in clock ticks (10 ms): Postfix can relay these 20 messages
                # in less than one on a quiet machine (test_counts_the_cpu_of_reaped_children
                # checks the counting itself).
                assert run["cpu_seconds"] > 0, mta
            assert run["peak_rss_kib"] > 0, mta
            assert run["processes"], mta
        assert {"master", "smtpd", "cleanup", "qmgr", "smtp"} <= set(runs["postfix"]["processes"])
        assert list(bench_dir.iterdir()) == []
        assert _mentioning(str(bench_dir)) == []

    def test_refuses_a_queue_in_memory(self) -> None:
        """Queues on tmpfs are refused with one line that says so."""
        if "tmpfs" not in Path("/proc/mounts").read_text().split():
            pytest.skip("no tmpfs mounted")
        shm = Path("/dev/shm")
        done = _hubd("bench", "--compare-postfix", "--dir", str(shm), timeout=60)
        assert done.returncode == 1
        assert done.stdout == ""
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith(f"hubd: bench --compare-postfix: {shm} is on tmpfs")


class TestUsageSampler:
    def test_counts_the_cpu_of_reaped_children(self) -> None:
        """CPU burnt by a child that the root reaped during sampling is counted."""
        script = (
            "import os, sys, time\n"
            "sys.stdin.readline()\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    while time.process_time() < 0.3: pass\n"
            "    os._exit(0)\n"
            "os.waitpid(pid, 0)\n"
            "print('reaped', flush=True)\n"
            "sys.stdin.readline()\n"
        )
        with subprocess.Popen(
            [sys.executable, "-c", script],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        ) as root:
            assert root.stdin is not None
            assert root.stdout is not None
            sampler = UsageSampler(root.pid, interval=0.05)
            sampler.start()
            root.stdin.write("go\n")
            root.stdin.flush()
            assert root.stdout.readline() == "reaped\n"
            usage = sampler.stop()
            root.stdin.write("end\n")
            root.stdin.flush()
        assert usage.cpu_seconds >= 0.29
        assert usage.peak_rss_kib > 0
        assert usage.peak_pss_kib > 0
        assert usage.processes
