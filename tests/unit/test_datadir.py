"""The data-directory lock: refused at once for a live holder, waited for when it is dead."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubd.datadir import DataDirInUse, acquire_data_dir


@pytest.fixture
def held(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """The lock file of tmp_path/data taken on another open file (as another node's would be)."""
    directory = tmp_path / "data"
    directory.mkdir()
    fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    yield directory, fd
    os.close(fd)


def _write_pid(fd: int, pid: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{pid}\n".encode(), 0)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class TestAcquire:
    def test_free_directory_is_made_locked_and_names_us(self, tmp_path: Path) -> None:
        """A missing directory is made; the lock file holds our pid; release frees it."""
        lock = acquire_data_dir(tmp_path / "new")
        assert (tmp_path / "new" / "lock").read_text() == f"{os.getpid()}\n"
        with pytest.raises(DataDirInUse):
            acquire_data_dir(tmp_path / "new")
        lock.release()
        acquire_data_dir(tmp_path / "new").release()

    def test_live_holder_is_refused_without_waiting(self, held: tuple[Path, int]) -> None:
        """A holder whose pid lives: DataDirInUse at once, naming it."""
        directory, fd = held
        _write_pid(fd, os.getpid())
        time = FakeTime()
        with pytest.raises(DataDirInUse) as caught:
            acquire_data_dir(directory, clock=time.clock, sleep=time.sleep)
        assert caught.value.pid == os.getpid()
        assert str(caught.value) == (
            f"data directory {directory} is in use by another node (pid {os.getpid()})"
        )
        assert time.now == 0.0

    def test_dead_holder_is_waited_for_then_refused(self, held: tuple[Path, int]) -> None:
        """A dead pid whose lock is still held: waited for 10 s (told once), then refused."""
        directory, fd = held
        dead = _dead_pid()
        _write_pid(fd, dead)
        time = FakeTime()
        told: list[int | None] = []
        with pytest.raises(DataDirInUse) as caught:
            acquire_data_dir(directory, on_wait=told.append, clock=time.clock, sleep=time.sleep)
        assert told == [dead]
        assert 10.0 <= time.now < 10.5
        assert "still locked after 10s" in str(caught.value)
        assert f"pid {dead}" in str(caught.value)

    def test_inheritable_for_children(self, tmp_path: Path) -> None:
        """A child given the descriptor keeps the lock after the parent lets go."""
        lock = acquire_data_dir(tmp_path / "d")
        fd = lock.inheritable()
        with subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.stdin.readline()"],
            pass_fds=(fd,),
            stdin=subprocess.PIPE,
        ) as child:
            lock.release()
            time = FakeTime()
            with pytest.raises(DataDirInUse):
                acquire_data_dir(tmp_path / "d", clock=time.clock, sleep=time.sleep)
            assert child.stdin is not None
            child.stdin.close()
        acquire_data_dir(tmp_path / "d").release()
