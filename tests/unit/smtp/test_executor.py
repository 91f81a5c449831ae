"""Node actions carried out against a real queue database: commits and XSHADOW bookkeeping."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hubd.shadow.delayed_ack import Departures
from hubd.smtp.actions import (
    AckRefused,
    AwaitDeparture,
    Commit,
    Committed,
    Departed,
    DropTaken,
    Failed,
    ListNotices,
    NoticesListed,
    RegisterUpstream,
    TakenDropped,
    UpstreamRegistered,
)
from hubd.smtp.executor import Executor
from hubd.smtp.message import ReceivedMessage
from hubd.tracking import Tracker, read_events
from storage import NewMessage, NewRecipient, Repository, ShadowLedger, Writer, open_database
from tests.unit.smtp.harness import UPSTREAM

NOW = 1_700_000_000.0


def message(queue_id: str = "Q1") -> ReceivedMessage:
    return ReceivedMessage(
        queue_id=queue_id,
        sender="a@outside.test",
        recipients=("bob@corp.test",),
        trace=b"Received: x\r\n",
        content=b"Subject: s\r\n\r\nbody\r\n",
        received_at=NOW,
        message_id=None,
        client_ip="192.0.2.9",
        helo="client.test",
    )


@dataclass
class Node:
    repository: Repository
    ledger: ShadowLedger
    tracking: Path


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    """A real queue database with its writer, ledger and tracking log."""
    database = await open_database(tmp_path / "queue.db")
    writer = Writer(database.write_engine)
    writer.start()
    yield Node(
        Repository(database, writer),
        ShadowLedger(writer, database.read_engine),
        tmp_path / "tracking",
    )
    await writer.stop()
    await database.close()


class TestCommit:
    async def test_committed(self) -> None:
        """The intake gets the message; the outcome is Committed."""
        taken: list[ReceivedMessage] = []

        async def intake(received: ReceivedMessage) -> None:
            taken.append(received)

        executor = Executor(intake=intake, clock=lambda: NOW)
        assert await executor.run(Commit(message(), watch_departure=False)) == Committed()
        assert taken == [message()]
        assert executor.commits_in_flight == 0

    async def test_failure_is_logged_and_reported(self, caplog: pytest.LogCaptureFixture) -> None:
        """An intake that raises gives Failed, and the fault is logged with the queue id."""

        async def intake(received: ReceivedMessage) -> None:
            raise OSError("disk on fire")

        executor = Executor(intake=intake, clock=lambda: NOW)
        with caplog.at_level(logging.ERROR):
            assert await executor.run(Commit(message("Q7"), watch_departure=False)) == Failed()
        assert "commit Q7" in caplog.text
        assert "disk on fire" in caplog.text

    async def test_commit_outlives_its_session(self) -> None:
        """A session cancelled mid-commit (its client vanished) does not cut the commit short."""
        started, release = asyncio.Event(), asyncio.Event()
        done: list[str] = []

        async def intake(received: ReceivedMessage) -> None:
            started.set()
            await release.wait()
            done.append(received.queue_id)

        executor = Executor(intake=intake, clock=lambda: NOW)
        session = asyncio.create_task(executor.run(Commit(message(), watch_departure=False)))
        await started.wait()
        assert executor.commits_in_flight == 1
        session.cancel()
        with pytest.raises(asyncio.CancelledError):
            await session
        release.set()
        await executor.settle(5.0)
        assert done == ["Q1"]
        assert executor.commits_in_flight == 0

    async def test_departure_watched_before_commit(self) -> None:
        """A message that leaves while its commit is still answering is not missed."""
        departures = Departures()

        async def intake(received: ReceivedMessage) -> None:
            departures.left([received.queue_id])  # the scheduler is quick

        executor = Executor(intake=intake, clock=lambda: NOW, departures=departures)
        assert await executor.run(Commit(message(), watch_departure=True)) == Committed()
        assert await executor.run(AwaitDeparture("Q1", 30.0)) == Departed(left=True)

    async def test_departure_times_out(self) -> None:
        """A message that does not leave in time is answered all the same."""
        executor = Executor(intake=_ignore, clock=lambda: NOW, departures=Departures())
        assert await executor.run(AwaitDeparture("Q1", 0.01)) == Departed(left=False)


async def _ignore(received: ReceivedMessage) -> None:
    """An intake that takes every message and keeps none."""


class TestShadowVerbs:
    @pytest.fixture
    def tracker(self, node: Node) -> Iterator[Tracker]:
        tracker = Tracker(node.tracking, "hub-d", lambda: NOW)
        yield tracker
        tracker.close()

    def executor(self, node: Node, tracker: Tracker) -> Executor:
        return Executor(intake=_ignore, clock=lambda: NOW, ledger=node.ledger, tracker=tracker)

    async def test_register_then_list(self, node: Node, tracker: Tracker) -> None:
        """XSHADOW registers the upstream; XQDISCARD then lists nothing, and refuses a far ACK."""
        executor = self.executor(node, tracker)
        assert await executor.run(RegisterUpstream(UPSTREAM)) == UpstreamRegistered()
        assert await executor.run(ListNotices(UPSTREAM, 10, None)) == NoticesListed((), 0)
        assert await executor.run(ListNotices(UPSTREAM, 10, 5)) == AckRefused()

    async def test_taken(self, node: Node, tracker: Tracker) -> None:
        """XQTAKEN drops a pending message from that upstream and logs it DUPLICATE."""
        executor = self.executor(node, tracker)
        await executor.run(RegisterUpstream(UPSTREAM))
        await node.repository.enqueue(
            NewMessage(
                "Q5",
                "a@up.test",
                [NewRecipient("bob@far.test", "route:far.test")],
                b"Subject: s\r\n\r\nx\r\n",
                NOW,
                None,
                "up-1.0123456789abcdef.Q9",
                "up.test [10.0.0.7]",
                upstream=UPSTREAM.name,
                upstream_incarnation=UPSTREAM.incarnation,
            )
        )
        outcome = await executor.run(DropTaken(UPSTREAM, ("Q5", "Q404")))
        assert outcome == TakenDropped(1)
        events = [e for e in read_events(node.tracking) if e["event"] == "DUPLICATE"]
        assert [e["queue_id"] for e in events] == ["Q5"]

    async def test_without_ledger(self, caplog: pytest.LogCaptureFixture) -> None:
        """An XSHADOW action on a node without a ledger fails, logged, and is reported Failed."""
        executor = Executor(intake=_ignore, clock=lambda: NOW)
        with caplog.at_level(logging.ERROR):
            assert await executor.run(RegisterUpstream(UPSTREAM)) == Failed()
        assert "XSHADOW bookkeeping failed" in caplog.text
