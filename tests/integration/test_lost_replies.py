"""Lost replies: a fault-injecting proxy between two nodes cuts A's session with B at each
point of the XSHADOW exchange (docs/xshadow.md); nothing is lost, nothing delivered twice.

A routes corp.test through the proxy to B, whose Maildir is the final hop. Each case cuts
one connection once, then waits (polling, with timeouts) until the mail has settled: every
message is in B's Maildir, neither queue holds anything, A holds no shadow.
"""

from __future__ import annotations

import asyncio
import smtplib
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from hubd.config import Config, load_config
from hubd.node import Node
from hubd.testing import (
    FaultProxy,
    NodeProcess,
    async_wait_until,
    free_loopback_address,
    maildir_messages,
    write_config,
)
from hubd.tracking import read_events
from tests.conftest import NodeFactory, merge, node_settings

pytestmark = pytest.mark.integration

COUNT = 3
WITHIN = 30.0  # each wait; a case settles in a few seconds (heartbeats and retries are 1 s)


@dataclass(frozen=True, slots=True)
class CutPoint:
    """Where the proxy cuts: lines flowing `direction` that match `pattern`, `when`."""

    direction: Literal["client", "server"]
    pattern: bytes
    when: Literal["before", "after"]
    resent: bool = False  # A never learns that B took the message, so it sends it again
    # Whether A acknowledges B's last notice without further mail. Not when the connection
    # goes right after the reply listing the last notice: A has processed it and holds no
    # shadow, so it has no reason to call B again; B keeps what it listed until A's next
    # session (or auto_discard), as docs/xshadow.md provides.
    acknowledged: bool = True


# B's reply to DATA, "250 2.0.0 <queue-id> queued".
DATA_REPLY = rb"^250 2\.0\.0 [0-9A-Za-z]+ queued$"
# B owes one notice per message, numbered from 1: SEQ=COUNT is the last.
LAST_SEQ = str(COUNT).encode()
CUT_POINTS = [
    pytest.param(CutPoint("server", DATA_REPLY, "before", resent=True), id="before-data-250"),
    pytest.param(CutPoint("server", DATA_REPLY, "after"), id="after-data-250"),
    # The first line of an XQDISCARD reply that lists notices (an empty one is "SEQ=n none"):
    # A sees none of it and still holds the shadows.
    pytest.param(CutPoint("server", rb"^250-2\.0\.0 ID=", "before"), id="before-discard-reply"),
    # The last line of the reply that lists the last notice: A drops its last shadows, and
    # its acknowledgement is lost with the connection.
    pytest.param(
        CutPoint("server", rb"^250 2\.0\.0 SEQ=" + LAST_SEQ + b"$", "after", acknowledged=False),
        id="after-discard-reply",
    ),
    # A's acknowledgement of the last notice reaches B; B's reply to it is lost.
    pytest.param(
        CutPoint("client", rb"^XQDISCARD 0 ACK=" + LAST_SEQ + b"$", "after"), id="after-ack"
    ),
]


@dataclass(frozen=True, slots=True)
class Side:
    """One node of the pair, in this process or as a `hubd serve` of several processes: the
    test looks at it only from outside (its relay address, Maildir, tracking log, and its
    queue file read-only), so both kinds are checked the same way."""

    relay: tuple[str, int]
    config: Config

    def query(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        path = self.config.node.data_dir / "queue.db"
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def count(self, sql: str) -> int:
        return int(self.query(sql)[0][0])


def _send(side: Side, message_ids: list[str]) -> None:
    with smtplib.SMTP(*side.relay, local_hostname="client.test", timeout=10) as c:
        for n, message_id in enumerate(message_ids):
            data = f"Subject: {n}\r\nMessage-ID: {message_id}\r\n\r\nbody {n}\r\n".encode()
            c.sendmail("alice@client.test", ["bob@corp.test"], data)


def _delivered(side: Side) -> Counter[str]:
    """Message-IDs in bob's Maildir at `side`, counted."""
    ids: Counter[str] = Counter()
    for data in maildir_messages(side.config.mailbox_dir / "corp.test" / "bob").values():
        for line in data.split(b"\r\n"):
            if line.lower().startswith(b"message-id:"):
                ids[line.split(b":", 1)[1].strip().decode()] += 1
    return ids


def _events(side: Side, event: str) -> list[dict[str, Any]]:
    tracking = side.config.node.data_dir / "tracking"
    return [e for e in read_events(tracking) if e["event"] == event] if tracking.exists() else []


# Peers this node must still call: it holds shadows there, declared them dead, or owes XQTAKEN.
_CALLS_OWED = (
    "SELECT (SELECT count(*) FROM shadows) + (SELECT count(*) FROM peers WHERE dead = 1)"
    " + (SELECT count(*) FROM taken)"
)


class Pair:
    """A -> FaultProxy -> B, with the waits every case shares."""

    def __init__(self, a: Side, b: Side, proxy: FaultProxy) -> None:
        self.a, self.b, self.proxy = a, b, proxy

    async def send(self, message_ids: list[str]) -> None:
        await asyncio.to_thread(_send, self.a, message_ids)

    async def settled(self, message_ids: list[str], what: str) -> None:
        """Wait until B has every message and neither node holds anything for them."""

        def done() -> bool:
            return (
                set(message_ids) <= set(_delivered(self.b))
                and self.a.count("SELECT count(*) FROM messages") == 0
                and self.b.count("SELECT count(*) FROM messages") == 0
                and self.a.count(_CALLS_OWED) == 0  # no shadow, no dead peer
                # Tracking lines follow their commit: the queue can be empty a moment
                # before the last SEND is written.
                and set(message_ids) <= {e["message_id"] for e in _events(self.a, "SEND")}
            )

        await async_wait_until(done, WITHIN, what)

    def a_ack(self) -> int:
        """The last notice sequence A processed from B."""
        rows = self.a.query("SELECT ack FROM peers WHERE address = ?", self.proxy.address)
        assert rows, "A never completed XSHADOW with B"
        return int(rows[0][0])

    def owed_seqs(self) -> list[int]:
        """Sequence numbers of the discard notices B still owes its upstreams."""
        return [seq for (seq,) in self.b.query("SELECT seq FROM notices ORDER BY seq")]

    async def no_notice_owed(self, what: str) -> None:
        await async_wait_until(lambda: not self.owed_seqs(), WITHIN, what)


def _in_process(node: Node) -> Side:
    address = node.relay_addresses[0]
    return Side((address.host, address.port), node.config)


def _split_node(root: Path, name: str, **overrides: Any) -> tuple[NodeProcess, Side]:
    host, port = free_loopback_address()
    settings = merge(
        node_settings(root / name, name, host, port), {"node": {"processes": 2}, **overrides}
    )
    path = write_config(root / f"{name}.toml", settings)
    return NodeProcess(path, (host, port), root / f"{name}.log"), Side(
        (host, port), load_config(path)
    )


@pytest.fixture(params=["one-process", "split"])
async def pair(
    request: pytest.FixtureRequest, start_node: NodeFactory, tmp_path: Path
) -> AsyncIterator[Pair]:
    """A and B in this process, or as `hubd serve` with an acceptor and a delivery process
    each."""
    if request.param == "one-process":
        b = await start_node("b", local_domains=["corp.test"])
        target = b.relay_addresses[0]
        host, _ = free_loopback_address()
        async with FaultProxy(host, target.host, target.port, source_host=host) as proxy:
            routes = [{"domains": ["corp.test"], "next_hops": [proxy.address]}]
            a = await start_node("a", routes=routes)
            yield Pair(_in_process(a), _in_process(b), proxy)
        return
    b_node, b_side = _split_node(tmp_path, "b", local_domains=["corp.test"])
    await asyncio.to_thread(b_node.start)
    host, _ = free_loopback_address()
    try:
        async with FaultProxy(host, *b_side.relay, source_host=host) as proxy:
            routes = [{"domains": ["corp.test"], "next_hops": [proxy.address]}]
            a_node, a_side = _split_node(tmp_path, "a", routes=routes)
            await asyncio.to_thread(a_node.start)
            try:
                yield Pair(a_side, b_side, proxy)
            finally:
                a_node.kill()
    finally:
        b_node.kill()


@pytest.mark.parametrize("point", CUT_POINTS)
async def test_lost_reply(pair: Pair, point: CutPoint, request: pytest.FixtureRequest) -> None:
    """One cut at this point: each message reaches B's Maildir once and every shadow goes,
    with nodes of one process and of several."""
    case = request.node.callspec.id
    rule = pair.proxy.cut(point.direction, point.pattern, when=point.when)
    message_ids = [f"<{case}-{n}@client.test>" for n in range(COUNT)]
    await pair.send(message_ids)
    await pair.proxy.wait_fired(1, within=WITHIN)
    assert (rule.fired, pair.proxy.fired) == (1, 1)
    await pair.settled(message_ids, "every message at B, nothing left in A's or B's queue")

    # Nothing lost, nothing delivered twice.
    assert _delivered(pair.b) == Counter(dict.fromkeys(message_ids, 1))
    delivered_at_b = Counter(e["message_id"] for e in _events(pair.b, "DELIVER"))
    assert delivered_at_b == Counter(dict.fromkeys(message_ids, 1))

    # What A did: each message sent once, and the one whose 250 was lost sent once before.
    sends = Counter(e["message_id"] for e in _events(pair.a, "SEND"))
    # A next hop that failed as a whole is not tried for a retry interval: messages due
    # meanwhile are deferred without a connection ("not tried"), which sends nothing.
    defers = Counter(
        e["message_id"] for e in _events(pair.a, "DEFER") if "not tried" not in e["reply"]
    )
    duplicates = Counter(e["message_id"] for e in _events(pair.b, "DUPLICATE"))
    if point.resent:
        # A never saw the 250: it tried again, and B dropped its second copy by origin key.
        assert len(defers) == 1, defers
        (again,) = defers
        assert defers == Counter({again: 1})
        assert "Lost connection" in next(
            e["reply"] for e in _events(pair.a, "DEFER") if e["message_id"] == again
        )
        assert sends == Counter(dict.fromkeys(message_ids, 1))
        assert duplicates == Counter({again: 1})
        assert len(_events(pair.b, "RECEIVE")) == COUNT + 1
    else:
        assert not _events(pair.a, "DEFER")
        assert sends == Counter(dict.fromkeys(message_ids, 1))
        assert not duplicates
        assert len(_events(pair.b, "RECEIVE")) == COUNT

    # Every shadow was discarded once, on B's notice (not by auto_discard, not resubmitted).
    a_queue_ids = {e["queue_id"]: e["message_id"] for e in _events(pair.a, "SEND")}
    discards = _events(pair.a, "DISCARD")
    assert Counter(a_queue_ids[e["queue_id"]] for e in discards) == Counter(
        dict.fromkeys(message_ids, 1)
    )
    # ...and each DISCARD is for the shadow A recorded (B's id of the copy A knows about).
    held = {e["queue_id"]: e["reply"].rpartition(" ")[2] for e in _events(pair.a, "SHADOW")}
    assert len(held) == COUNT
    assert sorted(e["reply"] for e in discards) == sorted(
        f"delivered onward by b as {held[e['queue_id']]}" for e in discards
    )
    assert not _events(pair.a, "RESUBMIT")

    # B owes A no notice that A has not processed: any left are at or below A's ACK.
    ack = pair.a_ack()
    assert all(seq <= ack for seq in pair.owed_seqs()), (ack, pair.owed_seqs())
    if point.acknowledged:
        # Acknowledged (even when the reply to the acknowledgement was lost): forgotten.
        await pair.no_notice_owed("B to forget the notices A acknowledged")

    # The next session acknowledges what A processed; B forgets every notice.
    probe = [f"<{case}-probe@client.test>"]
    await pair.send(probe)
    await pair.settled(probe, "the probe at B and its shadow discarded")
    await pair.no_notice_owed("B to forget every notice after the next acknowledgement")
    assert _delivered(pair.b) == Counter(dict.fromkeys(message_ids + probe, 1))
