"""What a comparison needs: Postfix's programs, root, and queues on a real filesystem."""

from __future__ import annotations

from pathlib import Path

import pytest

from hubd.bench import requirements
from hubd.bench.requirements import (
    check_filesystem,
    check_reachable,
    check_root,
    filesystem_of,
    find_postfix,
)

MOUNTS = """\
/dev/vda / ext4 rw,relatime 0 0
proc /proc proc rw,relatime 0 0
tmpfs /tmp tmpfs rw,nosuid,nodev 0 0
/dev/vdb /var/tmp/disk\\040two xfs rw 0 0
tmpfs /var/tmp/disk\\040two/ram tmpfs rw 0 0
"""


class TestFilesystem:
    @pytest.mark.parametrize(
        ("path", "expected"),
        [
            ("/var/tmp", "ext4"),
            ("/tmp/hubd-bench-x", "tmpfs"),
            ("/tmpfoo", "ext4"),
            ("/var/tmp/disk two/q", "xfs"),
            ("/var/tmp/disk two/ram/q", "tmpfs"),
            ("/", "ext4"),
        ],
        ids=["root-fs", "tmpfs", "prefix-is-not-a-parent", "escaped-space", "nested", "slash"],
    )
    def test_longest_mount_point_wins(self, path: str, expected: str) -> None:
        """A path is on the filesystem of the deepest mount point that holds it."""
        assert filesystem_of(Path(path), MOUNTS) == expected

    def test_memory_is_refused(self) -> None:
        """tmpfs is refused with a line that says why and what to do; ext4 is fine."""
        (line,) = check_filesystem(Path("/tmp"), "tmpfs")
        assert "/tmp is on tmpfs" in line
        assert "--dir" in line
        assert check_filesystem(Path("/var/tmp"), "ext4") == []


class TestRoot:
    def test_root_or_a_line(self) -> None:
        """Root passes; anyone else gets one line saying that root is needed and why."""
        assert check_root(0) == []
        (line,) = check_root(1000)
        assert line.startswith("not root")
        assert "postfix -c DIR start" in line


class TestFindPostfix:
    def test_each_missing_program_is_a_line(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With nothing installed, Postfix, smtp-source and smtp-sink are each named once."""
        monkeypatch.setattr(requirements, "SEARCH_PATH", str(tmp_path))
        programs, problems = find_postfix()
        assert programs is None
        assert len(problems) == 3
        assert problems[0].startswith("Postfix is not installed")
        assert problems[1].startswith("smtp-source is not installed")
        assert problems[2].startswith("smtp-sink is not installed")
        assert all("\n" not in line for line in problems)


class TestReachable:
    def test_a_closed_parent_is_named(self, tmp_path: Path) -> None:
        """A directory under one closed to others is refused, naming the closed one."""
        closed = tmp_path / "closed"
        inner = closed / "queues"
        inner.mkdir(parents=True)
        closed.chmod(0o700)
        try:
            (line,) = check_reachable(inner)
        finally:
            closed.chmod(0o755)
        assert f"{closed} is closed to other users" in line

    def test_an_open_path(self) -> None:
        """/ is open to everyone."""
        assert check_reachable(Path("/")) == []
