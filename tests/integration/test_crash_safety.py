"""kill -9 in the middle of a load: no answered message lost, none doubled, none torn.

The node runs as a child process (`python -m hubd serve`) on its own 127.0.x.y. Fifty client
sessions send 2,000 messages for a local domain; once a third of them are answered and at
least ten DATA transfers are in flight, the node gets SIGKILL. After a restart on the same
configuration, the Maildir must hold every message answered 250 exactly once, byte for byte.
"""

from __future__ import annotations

import asyncio
import enum
import math
import os
import random
import re
import signal
import smtplib
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiosmtplib
import pytest

from hubd.testing import (
    NodeProcess,
    async_wait_until,
    free_loopback_address,
    group_alive,
    maildir_messages,
    wait_until,
    write_config,
)
from tests.conftest import NodeFactory, merge, node_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOTAL_MESSAGES = 2000
SESSIONS = 50
MIN_IN_FLIGHT_AT_KILL = 10
KILL_AFTER_ANSWERED = TOTAL_MESSAGES // 3
KILL_NO_LATER_THAN = TOTAL_MESSAGES // 2
MAILBOXES = 20
SENDER = "load@outside.test"
DOMAIN = "corp.test"
SEEDS = [1, 2, 3]


@dataclass(frozen=True, slots=True)
class Target:
    """What the SIGKILL hits: a one-process node, or one kind of process of a split node."""

    name: str
    processes: int
    restarts_itself: bool  # the supervisor restarts the killed child: no restart by the test

    def kill(self, node: NodeProcess) -> Callable[[], None]:
        assert node.process is not None
        supervisor = node.process.pid
        if self.name in ("node", "group"):
            return lambda: os.killpg(supervisor, signal.SIGKILL)
        if self.name == "supervisor":
            return lambda: os.kill(supervisor, signal.SIGKILL)
        child = node.children()[self.name]
        return lambda: os.kill(child, signal.SIGKILL)


TARGETS = [
    *[(seed, Target("node", 1, False)) for seed in SEEDS],
    (4, Target("acceptor-0", 2, True)),
    (5, Target("delivery-0", 2, True)),
    (6, Target("supervisor", 2, False)),
    (7, Target("group", 2, False)),
]

_TRACE = re.compile(
    rb"\AReturn-Path: <(?P<sender>[^>]*)>\r\n"
    rb"(?P<received>Received: [^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*)"
)
_MESSAGE_ID = re.compile(rb"^Message-ID: <(?P<tag>[^@>]+)@load\.test>\r$", re.MULTILINE)
_QUEUED = re.compile(r"^2\.0\.0 (?P<queue_id>\S+) queued$")


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message of the load: its unique tag, its recipient and its exact bytes."""

    tag: str
    recipient: str
    data: bytes


class Outcome(enum.Enum):
    """What a client learnt about one message."""

    NOT_SENT = "not sent"  # the connection failed before DATA: the node cannot have it
    ACCEPTED = "250"
    REFUSED = "other reply"
    UNKNOWN = "connection error during DATA"


@dataclass(slots=True)
class Result:
    outcome: Outcome
    reply: str = ""
    queue_id: str = ""


@dataclass(slots=True)
class LoadState:
    """Counters shared by the sessions; `kill` is called the moment the kill condition holds.

    The condition is checked, and the signal sent, synchronously as a session is about to
    start a DATA transfer (so the node is busy receiving, not idle between bursts of
    replies): with no await in between, the figures recorded are exactly those at the kill.
    """

    kill: Callable[[], None]
    answered: int = 0
    in_flight: int = 0
    killed: bool = False
    in_flight_at_kill: int = -1
    answered_at_kill: int = -1
    results: dict[int, Result] = field(default_factory=dict)

    def start_data(self) -> bool:
        """Count a DATA transfer about to start; False when the node is (now) killed instead."""
        self._check()
        if self.killed:
            return False
        self.in_flight += 1
        return True

    def data_finished(self, *, answered: bool) -> None:
        self.in_flight -= 1
        if answered and not self.killed:
            self.answered += 1

    def _check(self) -> None:
        if (
            not self.killed
            and self.in_flight >= MIN_IN_FLIGHT_AT_KILL
            and KILL_AFTER_ANSWERED <= self.answered <= KILL_NO_LATER_THAN
        ):
            self.killed = True
            self.in_flight_at_kill = self.in_flight
            self.answered_at_kill = self.answered
            self.kill()


def build_messages(seed: int) -> list[Outgoing]:
    """2,000 messages of a few hundred bytes to ~20 KB, each with its own tag, from a seed."""
    rng = random.Random(seed)
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:-_=+/"
    messages = []
    for index in range(TOTAL_MESSAGES):
        tag = f"crash-{seed}-{index:04d}"
        recipient = f"u{rng.randrange(MAILBOXES)}@{DOMAIN}"
        size = int(math.exp(rng.uniform(math.log(300), math.log(20_000))))
        head = (
            f"From: Load <{SENDER}>\r\n"
            f"To: <{recipient}>\r\n"
            f"Subject: load message {tag}\r\n"
            f"Message-ID: <{tag}@load.test>\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "\r\n"
            f"id: {tag}\r\n"
        ).encode()
        lines = [head]
        length = len(head)
        while length < size:
            kind = rng.random()
            if kind < 0.05:
                line = "." + "".join(rng.choices(alphabet, k=rng.randint(0, 40)))  # dot-stuffed
            elif kind < 0.08:
                line = "Grüße aus Köln, ☃ " + str(rng.randint(0, 10**6))  # 8-bit bytes
            elif kind < 0.10:
                line = ""
            else:
                line = "".join(rng.choices(alphabet, k=rng.randint(1, 98)))
            encoded = line.encode() + b"\r\n"
            lines.append(encoded)
            length += len(encoded)
        messages.append(Outgoing(tag, recipient, b"".join(lines)))
    return messages


async def _session(
    address: tuple[str, int],
    messages: list[Outgoing],
    work: asyncio.Queue[int],
    state: LoadState,
) -> None:
    """One client session: take messages from `work` until it is empty or the node is gone."""
    client = aiosmtplib.SMTP(
        hostname=address[0],
        port=address[1],
        local_hostname="load.test",
        start_tls=False,
        timeout=30,
    )
    await client.connect()
    try:
        await client.ehlo()
        while not state.killed:
            try:
                index = work.get_nowait()
            except asyncio.QueueEmpty:
                break
            message = messages[index]
            try:
                await client.mail(SENDER)
                await client.rcpt(message.recipient)
            except aiosmtplib.SMTPResponseException as error:
                state.results[index] = Result(Outcome.REFUSED, f"{error.code} {error.message}")
                await client.rset()
                continue
            except (aiosmtplib.SMTPException, OSError) as error:
                state.results[index] = Result(Outcome.NOT_SENT, repr(error))
                return
            if not state.start_data():  # the node is gone: stop before DATA, do not resend
                state.results[index] = Result(Outcome.NOT_SENT, "stopped after the kill")
                return
            answered = False
            try:
                response = await client.data(message.data)
                answered = True
            except aiosmtplib.SMTPResponseException as error:
                answered = True
                state.results[index] = Result(Outcome.REFUSED, f"{error.code} {error.message}")
                continue
            except (aiosmtplib.SMTPException, OSError) as error:
                state.results[index] = Result(Outcome.UNKNOWN, repr(error))
                return
            finally:
                state.data_finished(answered=answered)
            queued = _QUEUED.match(response.message)
            assert queued is not None, f"unexpected 250 text {response.message!r}"
            state.results[index] = Result(
                Outcome.ACCEPTED, f"{response.code} {response.message}", queued["queue_id"]
            )
        if not state.killed:
            await client.quit()
    finally:
        client.close()


async def run_load(
    node: NodeProcess, messages: list[Outgoing], kill: Callable[[], None]
) -> LoadState:
    """Send `messages` over SESSIONS concurrent sessions, calling `kill` part-way through."""
    state = LoadState(kill=kill)
    work: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(messages)):
        work.put_nowait(index)
    async with asyncio.TaskGroup() as group:
        for _ in range(SESSIONS):
            group.create_task(_session(node.relay, messages, work, state))
    return state


def queue_counts(database: Path) -> tuple[int, int]:
    """(messages, recipients) in a node's queue, read through a read-only connection."""
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        (message_rows,) = conn.execute("SELECT count(*) FROM messages").fetchone()
        (recipient_rows,) = conn.execute("SELECT count(*) FROM recipients").fetchone()
    finally:
        conn.close()
    return message_rows, recipient_rows


def queue_stats(database: Path) -> dict[str, int]:
    """The durable counters of a stopped node's queue."""
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT name, value FROM stats").fetchall())
    finally:
        conn.close()


@dataclass(slots=True)
class MaildirScan:
    """Maildir files parsed once each (delivered files never change), by path."""

    root: Path
    files: dict[Path, tuple[str, bytes]] = field(default_factory=dict)

    def refresh(self) -> Counter[str]:
        """Read files not seen before; return how many files each tag has."""
        for sub in ("new", "cur"):
            for path in self.root.glob(f"*/{sub}/*"):
                if path.is_file() and path not in self.files:
                    data = path.read_bytes()
                    found = _MESSAGE_ID.search(data)
                    self.files[path] = (found["tag"].decode() if found else "", data)
        return Counter(tag for tag, _ in self.files.values())


class TestKillNineUnderLoad:
    @pytest.mark.parametrize(
        ("seed", "target"), TARGETS, ids=[f"{t.name}-seed{seed}" for seed, t in TARGETS]
    )
    def test_no_answered_message_lost_or_doubled(
        self, tmp_path: Path, seed: int, target: Target
    ) -> None:
        """SIGKILL amid 50 sessions of load loses no 250'd message and leaves none twice or torn,
        whichever process of the node it hits."""
        started = time.monotonic()
        host, port = free_loopback_address()
        data_dir = tmp_path / "node"
        settings = merge(
            node_settings(data_dir, "crash", host, port),
            {"local_domains": [DOMAIN], "node": {"processes": target.processes}},
        )
        config = write_config(tmp_path / "hubd.toml", settings)
        node = NodeProcess(config, (host, port), tmp_path / "node.log")
        messages = build_messages(seed)
        by_tag = {message.tag: index for index, message in enumerate(messages)}

        node.start()
        try:
            state = asyncio.run(run_load(node, messages, target.kill(node)))
            assert state.killed, (
                f"never reached the kill condition: {state.answered} answered, "
                f"{state.in_flight} in flight at the end"
            )
            load_done = time.monotonic()
            if target.name == "supervisor":
                assert node.process is not None
                pgid = node.process.pid
                # PR_SET_PDEATHSIG: the children go with it, nobody else kills them.
                wait_until(lambda: not group_alive(pgid), 15, "children to die with it")
            if not target.restarts_itself:
                node.kill()  # reap the killed process, and wait for every child to be gone
                node.start()
            accepted = {
                messages[i].tag: r
                for i, r in state.results.items()
                if r.outcome is Outcome.ACCEPTED
            }
            scan = MaildirScan(data_dir / "mailboxes" / DOMAIN)
            try:
                wait_until(
                    lambda: set(accepted) <= set(scan.refresh()),
                    60,
                    "every message answered 250 to reach the Maildir",
                )
            except TimeoutError:
                missing = sorted(set(accepted) - set(scan.refresh()))
                pytest.fail(f"{len(missing)} messages answered 250 never arrived: {missing[:10]}")
            database = data_dir / "queue.db"
            wait_until(lambda: queue_counts(database) == (0, 0), 30, "the queue to drain")
            assert node.terminate() == 0
            assert queue_counts(database) == (0, 0)
        finally:
            node.kill()
        finished = time.monotonic()

        counts = scan.refresh()
        outcomes = Counter(result.outcome for result in state.results.values())
        stats = queue_stats(database)
        per_commit = stats["ops:enqueue"] / stats["commits:enqueue"]
        print(
            f"\nseed {seed}: attempted {len(state.results)}, {dict(outcomes)}; "
            f"in flight at kill {state.in_flight_at_kill}, answered at kill "
            f"{state.answered_at_kill}; enqueued {stats['ops:enqueue']} in "
            f"{stats['commits:enqueue']} commits ({per_commit:.1f} per commit); "
            f"Maildir files {len(scan.files)}; load {load_done - started:.1f}s, "
            f"total {finished - started:.1f}s"
        )

        assert state.in_flight_at_kill >= MIN_IN_FLIGHT_AT_KILL
        assert KILL_AFTER_ANSWERED <= state.answered_at_kill <= KILL_NO_LATER_THAN
        assert outcomes[Outcome.ACCEPTED] >= KILL_AFTER_ANSWERED
        assert outcomes[Outcome.REFUSED] == 0, [
            r.reply for r in state.results.values() if r.outcome is Outcome.REFUSED
        ][:5]

        # Every file is a message of this load, and no message is there twice.
        assert "" not in counts, "a Maildir file without one of our Message-IDs"
        doubled = {tag: n for tag, n in counts.items() if n > 1}
        assert not doubled, f"messages delivered more than once: {sorted(doubled)[:10]}"
        unknown_tags = set(counts) - set(by_tag)
        assert not unknown_tags, sorted(unknown_tags)[:10]

        # Every 250'd message is there; a message never handed over by DATA is not.
        lost = set(accepted) - set(counts)
        assert not lost, f"lost after 250: {sorted(lost)[:10]}"
        for index, result in state.results.items():
            if result.outcome is Outcome.NOT_SENT:
                assert messages[index].tag not in counts
        never_tried = set(by_tag) - {messages[i].tag for i in state.results}
        assert not never_tried & set(counts)

        # Each file is whole: hubd's trace headers, then the sent bytes exactly.
        for path, (tag, data) in scan.files.items():
            message = messages[by_tag[tag]]
            trace = _TRACE.match(data)
            assert trace is not None, f"{path}: no Return-Path and Received: in front"
            assert trace["sender"] == SENDER.encode()
            received = trace["received"]
            assert f"for <{message.recipient}>".encode() in received
            assert data[trace.end() :] == message.data, f"{path}: body differs from what was sent"
            assert path.parent.parent.name == message.recipient.partition("@")[0]
            answer = accepted.get(tag)
            if answer is not None:
                assert f" id {answer.queue_id}\r\n".encode() in received
                assert answer.queue_id in path.name

        # Concurrent sessions shared commits.
        assert per_commit > 1, stats


def _send_one(host: str, port: int, recipient: str, tag: str) -> tuple[int, bytes]:
    data = (
        f"From: <{SENDER}>\r\nTo: <{recipient}>\r\nMessage-ID: <{tag}@load.test>\r\n"
        f"Subject: {tag}\r\n\r\nid: {tag}\r\n"
    ).encode()
    with smtplib.SMTP(host, port, local_hostname="load.test", timeout=10) as client:
        client.ehlo()
        client.mail(SENDER)
        client.rcpt(recipient)
        return client.data(data)


class TestMaildirLeftHalfMade:
    async def test_folder_without_subfolders_is_completed(self, start_node: NodeFactory) -> None:
        """A mailbox folder that a crash left without tmp/, new/ and cur/ still takes delivery."""
        node = await start_node("mbx", local_domains=[DOMAIN])
        folder = node.config.mailbox_dir / DOMAIN / "bob"
        folder.mkdir(parents=True)  # what kill -9 between the Maildir mkdir calls leaves
        address = node.relay_addresses[0]
        code, _ = await asyncio.to_thread(
            _send_one, address.host, address.port, f"bob@{DOMAIN}", "half-made"
        )
        assert code == 250
        files = await async_wait_until(lambda: maildir_messages(folder), 10, "the delivery")
        assert len(files) == 1
        assert sorted(p.name for p in folder.iterdir()) == ["cur", "new", "tmp"]
