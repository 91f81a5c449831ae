"""Queue commands on a live node that hand mail on: `remove --dsn` through the admin API,
`flush`, and `redirect --to` a second node."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hubd.testing import maildir_messages, wait_until
from tests.integration.test_admin_api import LiveNode, _deferred, _hubd, _listed, _through_api

pytestmark = pytest.mark.integration


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveNode]:
    node = LiveNode(tmp_path)
    node.process.start()
    yield node
    node.process.kill()


class TestRemoveWithDsn:
    def test_a_running_node_removes_and_tells_the_sender(self, live: LiveNode) -> None:
        """`remove --dsn` on a live node of two processes goes through its API: the
        message is gone and its sender gets a failure DSN (5.0.0) in a local Maildir."""
        stuck = live.send("alice@corp.test", "bob@down.test", "stuck")
        wait_until(lambda: _deferred(live.api, stuck), 15, "an attempt")
        done = _hubd(live.config, "remove", "--dsn", stuck)
        assert (done.returncode, done.stdout) == (0, f"{stuck}: removed\n"), done.stderr
        assert _through_api(live, "remove", stuck)
        mailboxes = live.data_dir / "mailboxes"
        wait_until(lambda: len(maildir_messages(mailboxes)) == 1, 15, "the DSN delivered")
        ((path, dsn),) = maildir_messages(mailboxes).items()
        assert "alice" in str(path)
        assert b"multipart/report" in dsn
        assert b"Status: 5.0.0" in dsn
        assert b"bob@down.test" in dsn
        assert stuck not in _listed(live.config)
        wrong = live.api.call("POST", "/queue/retry", body={"queue_ids": [stuck], "dsn": True})
        assert wrong[0] == 400
