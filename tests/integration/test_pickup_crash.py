"""kill -9 of a real `hubd serve` while it takes pickup files: none lost, none taken twice.

300 files wait in the pickup directory of a node that delivers them to local Maildirs. The
node (one process, or a supervisor whose first delivery child scans) is killed with SIGKILL
three times while it works through them (after about 60, 140 and 220 are gone from the
directory), and started again each time on the same data. In the end every file's message
is in its mailbox exactly once, and nothing is left or set aside.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from hubd.testing import (
    NodeProcess,
    free_loopback_address,
    maildir_messages,
    wait_until,
    write_config,
)
from tests.conftest import merge, node_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FILES = 300
MAILBOXES = 5
KILL_WHEN_LEFT = (240, 160, 80)
_MESSAGE_ID = re.compile(rb"^Message-ID: <(?P<tag>f\d+)@app\.test>\r$", re.MULTILINE)


@pytest.mark.parametrize("processes", [1, 3], ids=["one-process", "three-processes"])
def test_kill_9_while_taking_files(tmp_path: Path, processes: int) -> None:
    """Three SIGKILLs mid-pickup; after restarts each file's message is delivered once."""
    host, port = free_loopback_address()
    data_dir = tmp_path / "node"
    settings = merge(
        node_settings(data_dir, "crash", host, port),
        {
            "local_domains": ["corp.test"],
            "node": {"processes": processes},
            "pickup": {"interval": "50ms"},
        },
    )
    config = write_config(tmp_path / "hubd.toml", settings)
    pickup_dir = data_dir / "pickup"
    pickup_dir.mkdir(parents=True, mode=0o700)
    for i in range(FILES):
        staging = tmp_path / f"f{i}.eml"
        staging.write_bytes(
            f"From: app@corp.test\r\nTo: u{i % MAILBOXES}@corp.test\r\nSubject: file {i}\r\n"
            f"Message-ID: <f{i}@app.test>\r\n\r\n{'line of text ' * 40}\r\n".encode()
        )
        staging.rename(pickup_dir / staging.name)  # written elsewhere, renamed in

    def left() -> int:
        return len(list(pickup_dir.glob("*.eml")))

    node = NodeProcess(config, (host, port), tmp_path / "node.log")
    kills = []
    try:
        for threshold in KILL_WHEN_LEFT:
            node.start()
            wait_until(
                lambda threshold=threshold: left() <= threshold, 60, f"{threshold} files left"
            )
            node.kill()
            kills.append(left())
        node.start()
        wait_until(lambda: left() == 0, 60, "every file taken")

        def delivered() -> Counter[str]:
            tags: Counter[str] = Counter()
            for data in maildir_messages(data_dir / "mailboxes" / "corp.test").values():
                match = _MESSAGE_ID.search(data)
                assert match is not None, data[:300]
                tags[match["tag"].decode()] += 1
            return tags

        wait_until(lambda: len(delivered()) == FILES, 60, "every message delivered")
        assert node.terminate() == 0
    finally:
        node.kill()

    copies = delivered()
    assert set(copies) == {f"f{i}" for i in range(FILES)}, "no file lost"
    assert [tag for tag, n in copies.items() if n > 1] == [], "no file taken twice"
    assert not list(pickup_dir.iterdir()), "nothing left behind or set aside"
    assert all(0 < n < FILES for n in kills), f"each kill fell mid-pickup: {kills}"
