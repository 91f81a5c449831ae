"""`hubd bench` as a user runs it: a node of its own in a subprocess, JSON on stdout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _bench(*args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "hubd", "bench", "--json", *args],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    data: dict[str, object] = json.loads(done.stdout)
    return data


class TestBenchCommand:
    def test_small_run_against_own_node(self) -> None:
        """50 messages over 5 sessions are all accepted and delivered, with sane figures."""
        report = _bench("--count", "50", "--concurrency", "5")
        assert report["mode"] == "node"
        assert (report["count"], report["size"], report["concurrency"]) == (50, 4096, 5)
        assert report["accepted"] == 50
        assert report["refused"] == 0
        assert report["delivered"] == 50
        assert report["enqueued"] == 50
        p50, p99 = report["latency_p50_ms"], report["latency_p99_ms"]
        assert isinstance(p50, float)
        assert isinstance(p99, float)
        assert 0 < p50 <= p99
        for key in ("accepted_per_second", "delivery_seconds", "commits_per_second"):
            value = report[key]
            assert isinstance(value, float)
            assert value > 0, key
        commits = report["commits"]
        assert isinstance(commits, int)
        assert 1 <= commits <= 50
        assert report["messages_per_commit"] == pytest.approx(50 / commits)

    def test_ceiling_run(self) -> None:
        """Against the storage-free sink every message is accepted; nothing is delivered."""
        report = _bench("--count", "20", "--concurrency", "2", "--ceiling")
        assert report["mode"] == "ceiling"
        assert report["accepted"] == 20
        assert report["delivered"] is None
        assert report["commits"] is None


class TestBenchQueue:
    def test_reports_claim_and_record_times(self) -> None:
        """`hubd bench-queue` fills a queue and reports a claim and a record time per size."""
        result = subprocess.run(
            [sys.executable, "-m", "hubd", "bench-queue", "--queued", "1000"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        header, row = result.stdout.strip().splitlines()
        assert "claim 256 (ms)" in header
        queued, claim, record = row.split()
        assert int(queued) == 1000
        assert float(claim) > 0
        assert float(record) > 0


@pytest.mark.skipif(
    not Path("/usr/sbin/smtp-sink").exists(), reason="smtp-sink comes with Debian's postfix"
)
class TestDrainBench:
    def test_a_queue_drains_when_its_hop_returns(self, tmp_path: Path) -> None:
        """`hubd bench-queue --drain` empties a queue into smtp-sink and reports each
        process's memory."""
        done = subprocess.run(
            [sys.executable, "-m", "hubd", "bench-queue", "--drain", "300", "--dir", str(tmp_path)],
            capture_output=True,
            timeout=180,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        line = done.stdout.decode()
        assert line.startswith("drained 300 queued messages in "), line
        assert "hubd.worker delivery" in line, line  # a node of its default processes
        assert "peak WAL " in line, line
        assert not list(tmp_path.iterdir())  # nothing left behind
