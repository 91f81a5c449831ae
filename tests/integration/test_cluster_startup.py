"""`hubd cluster up` as a new user meets it: Ctrl-C during start-up, hints, the status table.

Ctrl-C (a real SIGINT) at several moments of start-up stops every process `up` started, with
no traceback. After `up --detach`, each command it prints works as printed from the same
directory (the cluster directory given relatively), `cluster start` on a running node says
so, and the status table fits 80 columns.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hubd.testing import maildir_messages, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HUBD = str(Path(sys.executable).parent / "hubd")  # the script `make run` uses


def _processes_under(directory: Path) -> list[int]:
    """Live (not zombie) processes whose command line names the cluster directory."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(directory).encode() in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def _hubd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HUBD, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


class TestCtrlCDuringStartUp:
    @pytest.mark.parametrize("moment", ["dns", "mbx-1", "outside-1", "hub-1"])
    def test_stops_everything_it_started(self, tmp_path: Path, moment: str) -> None:
        """SIGINT once `moment`'s process is started: all stopped, exit 130, no traceback."""
        directory = tmp_path / "cluster"
        with subprocess.Popen(
            [HUBD, "cluster", "up", "--hubs", "2", "--dir", str(directory)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as up:
            wait_until((directory / moment / "node.pid").exists, 60, f"{moment} started")
            up.send_signal(signal.SIGINT)
            out, err = up.communicate(timeout=90)
        assert "Traceback" not in out + err
        if "all nodes accept mail" not in out:  # not too late: still starting when signalled
            assert up.returncode == 130, (out, err)
            assert err.startswith("hubd: cluster start-up interrupted; stopped: "), err
        else:
            assert up.returncode == 0, (out, err)
        assert _processes_under(directory) == []

    def test_at_once(self, tmp_path: Path) -> None:
        """SIGINT as soon as the command has begun (its directory made, no node started
        yet): it ends with no traceback, no process.

        (A SIGINT inside CPython's own start-up, the first milliseconds before any of
        hubd's code runs, can be swallowed by the interpreter; that moment is not tested.)"""
        directory = tmp_path / "cluster"
        with subprocess.Popen(
            [HUBD, "cluster", "up", "--hubs", "1", "--dir", str(directory)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as up:
            wait_until(directory.exists, 60, "the command to begin")
            up.send_signal(signal.SIGINT)
            out, err = up.communicate(timeout=90)
        assert "Traceback" not in out + err
        assert up.returncode != 0
        assert _processes_under(directory) == []


class TestHintsAsPrinted:
    def test_printed_commands_work_from_the_same_directory(self, tmp_path: Path) -> None:
        """Every `Try:` line runs as printed; start on a running node; 80-column status."""
        up = _hubd("cluster", "up", "--detach", "--hubs", "1", "--dir", "var/c", cwd=tmp_path)
        try:
            assert up.returncode == 0, up.stderr
            tried = [line.strip() for line in up.stdout.split("Try:\n", 1)[1].splitlines()]
            assert len(tried) == 3
            for line in tried:
                argv = shlex.split(line)
                assert argv[0] == HUBD
                done = subprocess.run(
                    argv, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
                )
                assert done.returncode == 0, (line, done.stdout, done.stderr)
            root = tmp_path / "var" / "c"
            for node, domain, local in (
                ("mbx-1", "corp.test", "user"),
                ("outside-1", "example.net", "friend"),
            ):
                box = root / node / "data" / "mailboxes" / domain / local
                wait_until(lambda b=box: maildir_messages(b), 60, f"mail in {box}")

            again = _hubd("cluster", "start", "hub-1", "--dir", "var/c", cwd=tmp_path)
            assert again.returncode == 0
            pid = (root / "hub-1" / "node.pid").read_text().strip()
            assert again.stdout == f"hub-1: already running (pid {pid})\n"

            status = _hubd("cluster", "status", "--dir", "var/c", cwd=tmp_path)
            paths = ("mailboxes of", "CA (", "submission user:")
            table = [line for line in status.stdout.splitlines() if not line.startswith(paths)]
            assert len(table) == 1 + 4, status.stdout
            # The CA and the ready user's password file are named; the password is not shown.
            assert f"{root / 'pki' / 'ca.pem'}" in status.stdout
            password = (root / "client-password").read_text().strip()
            assert f"password in {root / 'client-password'}" in status.stdout
            assert password not in status.stdout
            assert max(len(line) for line in table) <= 80, status.stdout
        finally:
            _hubd("cluster", "down", "--dir", "var/c", cwd=tmp_path)
        assert _processes_under(tmp_path / "var" / "c") == []
        assert os.listdir(tmp_path) == ["var"], "everything under the relative --dir"
