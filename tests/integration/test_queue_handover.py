"""Queue commands on a live node that hand mail on: `remove --dsn` through the admin API,
`flush`, and `redirect --to` a second node."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from hubd.routing import redirect_hop
from hubd.testing import NodeProcess, free_loopback_address, maildir_messages, wait_until
from hubd.testing import write_config as write_toml
from storage.shards import shard_of
from tests.conftest import merge, node_settings
from tests.integration.test_admin_api import (
    Api,
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


def _tried(api: Api, queue_id: str) -> bool:
    """Whether every recipient of the message has been deferred once (tried or not)."""
    status, body = api.call("GET", f"/queue/messages/{queue_id}")
    return status == 200 and all(r["last_error"].startswith("451") for r in body["recipients"])


def _other_shard_address(hop: str, shards: int) -> tuple[str, int]:
    """A free loopback address whose redirect hop is claimed by another delivery process
    than `hop`: the redirect must move its recipients' shard, or nobody claims them."""
    while True:
        address = free_loopback_address()
        if shard_of(redirect_hop(f"{address[0]}:{address[1]}").key, shards) != shard_of(
            hop, shards
        ):
            return address


class TestRedirect:
    def test_the_queue_goes_to_another_node_once(self, tmp_path: Path) -> None:
        """Mail queued on A (two delivery processes) for a dead hop, redirected to a running
        node B: every message reaches B's Maildir exactly once, and A's queue empties."""
        (tmp_path / "a").mkdir()
        a = LiveNode(tmp_path / "a", processes=4)  # 2 acceptors, 2 delivery processes
        b_host, b_port = _other_shard_address("route:down.test", 2)
        b_settings = merge(
            node_settings(tmp_path / "b", "b", b_host, b_port), {"local_domains": ["down.test"]}
        )
        b = NodeProcess(
            write_toml(tmp_path / "b.toml", b_settings), (b_host, b_port), tmp_path / "b.log"
        )
        count = 12
        a.process.start()
        b.start()
        try:
            ids = [a.send("alice@corp.test", f"u{i % 3}@down.test", f"m{i}") for i in range(count)]
            wait_until(lambda: all(_tried(a.api, q) for q in ids), 15, "A's tries at the dead hop")
            done = _hubd(a.config, "redirect", "--to", f"{b_host}:{b_port}", "ALL")
            assert done.returncode == 0, done.stderr
            assert done.stdout.endswith(f"redirect: {count} messages ({count} recipients)\n")
            mailboxes = tmp_path / "b" / "mailboxes"
            wait_until(lambda: len(maildir_messages(mailboxes)) >= count, 15, "B's deliveries")
            wait_until(lambda: _listed(a.config) == set(), 15, "A's queue empty")
            delivered = [
                re.search(rb"Message-ID: (<[^>]+>)", data)
                for data in maildir_messages(mailboxes).values()
            ]
            assert sorted(m[1].decode() for m in delivered if m) == sorted(
                f"<m{i}@t>" for i in range(count)
            )
            tracked = (a.data_dir / "tracking").glob("*")
            sends = [
                line
                for path in tracked
                for line in path.read_text().splitlines()
                if '"SEND"' in line
            ]
            assert len(sends) == count
            assert all(f'"next_hop": "redirect:{b_host}:{b_port}"' in line for line in sends)
        finally:
            a.process.kill()
            b.kill()
        bad = _hubd(a.config, "redirect", "--to", "nowhere", "ALL")
        assert bad.returncode == 2
        assert "--to" in bad.stderr
