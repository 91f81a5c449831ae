"""Lost replies: a fault-injecting proxy between two nodes cuts A's session with B at each
point of the XSHADOW exchange (docs/xshadow.md); nothing is lost, nothing delivered twice.

A routes corp.test through the proxy to B, whose Maildir is the final hop. Each case cuts
one connection once, then waits (polling, with timeouts) until the mail has settled: every
message is in B's Maildir, neither queue holds anything, A holds no shadow.
"""

from __future__ import annotations

import asyncio
import smtplib
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import pytest
from sqlalchemy import select

from hubd.node import Node
from hubd.testing import FaultProxy, async_wait_until, free_loopback_address, maildir_messages
from hubd.tracking import read_events
from storage import Repository, ShadowLedger
from storage.schema import notices
from tests.conftest import NodeFactory

pytestmark = pytest.mark.integration

COUNT = 3
WITHIN = 12.0  # each wait; a case settles in a few seconds (heartbeats and retries are 1 s)


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


def _send(node: Node, message_ids: list[str]) -> None:
    address = node.relay_addresses[0]
    with smtplib.SMTP(address.host, address.port, local_hostname="client.test", timeout=10) as c:
        for n, message_id in enumerate(message_ids):
            data = f"Subject: {n}\r\nMessage-ID: {message_id}\r\n\r\nbody {n}\r\n".encode()
            c.sendmail("alice@client.test", ["bob@corp.test"], data)


def _delivered(node: Node) -> Counter[str]:
    """Message-IDs in bob's Maildir at `node`, counted."""
    ids: Counter[str] = Counter()
    for data in maildir_messages(node.config.mailbox_dir / "corp.test" / "bob").values():
        for line in data.split(b"\r\n"):
            if line.lower().startswith(b"message-id:"):
                ids[line.split(b":", 1)[1].strip().decode()] += 1
    return ids


def _events(node: Node, event: str) -> list[dict[str, Any]]:
    tracking = node.config.node.data_dir / "tracking"
    return [e for e in read_events(tracking) if e["event"] == event] if tracking.exists() else []


async def _owed_seqs(node: Node) -> list[int]:
    """Sequence numbers of the discard notices `node` still owes its upstreams."""
    assert node.database is not None
    async with node.database.read_engine.connect() as conn:
        result = await conn.execute(select(notices.c.seq).order_by(notices.c.seq))
        return list(result.scalars())


def _repository(node: Node) -> Repository:
    assert node.repository is not None
    return node.repository


def _ledger(node: Node) -> ShadowLedger:
    assert node.ledger is not None
    return node.ledger


class Pair:
    """A -> FaultProxy -> B, with the waits every case shares."""

    def __init__(self, a: Node, b: Node, proxy: FaultProxy) -> None:
        self.a, self.b, self.proxy = a, b, proxy

    async def send(self, message_ids: list[str]) -> None:
        await asyncio.to_thread(_send, self.a, message_ids)

    async def settled(self, message_ids: list[str], what: str) -> None:
        """Wait until B has every message and neither node holds anything for them."""

        async def done() -> bool:
            return (
                set(message_ids) <= set(_delivered(self.b))
                and not await _repository(self.a).list_messages()
                and not await _repository(self.b).list_messages()
                and not await _ledger(self.a).heartbeat_targets()  # no shadow, no dead peer
            )

        await async_wait_until(done, WITHIN, what)

    async def a_ack(self) -> int:
        """The last notice sequence A processed from B."""
        state = await _ledger(self.a).peer_state(self.proxy.address)
        assert state is not None, "A never completed XSHADOW with B"
        return state[2]

    async def no_notice_owed(self, what: str) -> None:
        async def none_owed() -> bool:
            return await _ledger(self.b).owed_notices() == 0

        await async_wait_until(none_owed, WITHIN, what)


@pytest.fixture
async def pair(start_node: NodeFactory) -> AsyncIterator[Pair]:
    b = await start_node("b", local_domains=["corp.test"])
    target = b.relay_addresses[0]
    host, _ = free_loopback_address()
    async with FaultProxy(host, target.host, target.port, source_host=host) as proxy:
        a = await start_node("a", routes=[{"domains": ["corp.test"], "next_hops": [proxy.address]}])
        yield Pair(a, b, proxy)


@pytest.mark.parametrize("point", CUT_POINTS)
async def test_lost_reply(pair: Pair, point: CutPoint, request: pytest.FixtureRequest) -> None:
    """One cut at this point: each message reaches B's Maildir once and every shadow goes."""
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
    ack = await pair.a_ack()
    assert all(seq <= ack for seq in await _owed_seqs(pair.b)), (ack, await _owed_seqs(pair.b))
    if point.acknowledged:
        # Acknowledged (even when the reply to the acknowledgement was lost): forgotten.
        await pair.no_notice_owed("B to forget the notices A acknowledged")

    # The next session acknowledges what A processed; B forgets every notice.
    probe = [f"<{case}-probe@client.test>"]
    await pair.send(probe)
    await pair.settled(probe, "the probe at B and its shadow discarded")
    await pair.no_notice_owed("B to forget every notice after the next acknowledgement")
    assert _delivered(pair.b) == Counter(dict.fromkeys(message_ids + probe, 1))
