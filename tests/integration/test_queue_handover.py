"""Queue commands on a live node that hand mail on: `remove --dsn` through the admin API,
`flush`, and `redirect --to` a second node."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from hubd.testing import maildir_messages, wait_until
from tests.integration.test_admin_api import (
    LiveNode,
    _deferred,
    _hubd,
    _listed,
    _Sink,
    _through_api,
)

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


class TestFlush:
    def test_flush_tries_a_hop_back_up_at_once(self, live: LiveNode) -> None:
        """Mail deferred for 1h to a dead hop goes at once when the hop is up and the
        operator flushes, on a running node (its API) and on a stopped one (its next
        start); a suspended message stays held."""
        config = live.config
        first = live.send("alice@outside.test", "bob@down.test", "first")
        held = live.send("alice@outside.test", "carol@down.test", "held")
        wait_until(lambda: _deferred(live.api, first) and _deferred(live.api, held), 15, "tries")
        assert _hubd(config, "suspend", held).returncode == 0
        sink = _Sink()
        controller = Controller(sink, hostname=live.down[0], port=live.down[1])
        controller.start()
        try:
            done = _hubd(config, "flush", "--hop", "route:down.test")
            assert (done.returncode, done.stdout) == (0, "flush: 1 recipient(s) due now\n")
            assert "admin API: flush route:down.test" in live.process.log.read_text()
            wait_until(lambda: len(sink.received) == 1, 10, "the flushed message delivered")
            assert _listed(config, "--state", "HELD") == {held}

            assert _hubd(config, "resume", held).returncode == 0
            wait_until(lambda: len(sink.received) == 2, 10, "the resumed message")
            controller.stop()
            later = live.send("alice@outside.test", "dave@down.test", "later")
            wait_until(lambda: _deferred(live.api, later), 15, "an attempt at a dead hop")
            assert live.process.terminate() == 0
            done = _hubd(config, "flush", "--json")
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout) == {"action": "flush", "next_hop": None, "changed": 1}
            controller = Controller(sink, hostname=live.down[0], port=live.down[1])
            controller.start()
            live.process.start()
            wait_until(lambda: len(sink.received) == 3, 10, "delivered at the next start")
        finally:
            controller.stop()
        assert sorted(e.rcpt_tos[0] for e in sink.received) == [
            "bob@down.test",
            "carol@down.test",
            "dave@down.test",
        ]
