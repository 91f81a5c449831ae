"""Chaos: hubs killed and wiped at random under a steady stream; every 250 arrives once.

Four `hubd serve` processes, each on its own 127.0.x.y: the mailstore M (the only final hop
for corp.test, never wiped), and hubs H1 (entry: the client submits there), H2 and H3. H1
routes corp.test to [H2, H3, M]; H2 and H3 route it to [M]. So H2 and H3 hold primaries
from H1 and shadows of what they sent to M. A client streams uniquely identified messages
to H1; a chaos task driven by `random.Random(seed)` SIGKILLs nodes and restarts them after
a random delay, sometimes with their disk wiped: H2 or H3, and H1 only in the variants
with delayed acknowledgement, where the client is H1's shadow until its 250, and with
shadow before acknowledgement (`before_ack = "require"`, H2 and H3 its redundancy peers),
where H1's 250 means a copy on H2 or H3 (H1's disk may go at any moment) and H1's links
to H2 and H3 go through FaultProxies that the chaos cuts (silence, not a reset) and heals,
for up to 9 s (past the heartbeat limit). At the end every
message the client got a 250 for must be in M's Maildir exactly once, and no message twice.

Limits of the model, which the chaos keeps to: one disk at a time (a wipe waits until every
message acknowledged before the previous wipe has reached M), M's disk never, and H1's disk
only while no 250 given by the `max_ack_delay` timeout is still on its way. Resubmissions
are counted, never asserted absent: a loaded machine may declare a slow node dead.

The seed replays the same actions, delays and messages (not the same interleaving).
`HUBD_CHAOS_SEEDS=7,8` picks seeds, `HUBD_CHAOS_MESSAGES=N` the size of a CI run, and
`HUBD_CHAOS_SECONDS=600` streams for that long instead (`make chaos`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import shlex
import sqlite3
import statistics
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from hubd.testing import (
    FaultProxy,
    NodeProcess,
    free_loopback_address,
    wait_until,
    write_config,
)
from hubd.tracking import read_events
from tests.conftest import merge, node_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DOMAIN = "corp.test"
MAILBOXES = ("bob", "carol", "dave")
SENDER = "alice@client.test"
HUBS = ("h2", "h3")  # hold primaries from H1 and shadows of what they sent to M
NODES = ("m", "h2", "h3", "h1")  # start order: next hops first
MAX_ACK_DELAY = 20.0
HEARTBEAT_FAILURES = 3  # at shadow.heartbeat_interval "1s": a peer is dead after ~3 s
WORKERS = 3  # concurrent client sessions to H1
DELIVERY_WAIT = 120.0  # after the chaos: every acknowledged message in M's Maildir
DRAIN_WAIT = 60.0  # then: every queue empty (no shadow, no copy in flight)

_MESSAGE_ID = re.compile(rb"^Message-ID: <(?P<id>chaos-\d+-\d+)@client\.test>\r?$", re.MULTILINE)
_QUEUED = re.compile(r"(?P<queue_id>\S+) queued$")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


SECONDS = _env_int("HUBD_CHAOS_SECONDS", 0)  # 0: a CI run, bounded by MESSAGES
MESSAGES = _env_int("HUBD_CHAOS_MESSAGES", 160)
_SEEDS = os.environ.get("HUBD_CHAOS_SEEDS", "").strip()
if _SEEDS:
    SEEDS = [int(s) for s in _SEEDS.split(",")]
elif SECONDS:
    SEEDS = [random.SystemRandom().randrange(1, 10**6) for _ in range(2)]  # new ground per run
else:
    SEEDS = [1, 2]
VARIANTS = ["plain", "delayed-ack", "before-ack"]


def replay_command(variant: str, seed: int) -> str:
    """The command line that runs this case again with the same seed."""
    env = [f"HUBD_CHAOS_SEEDS={seed}"]
    if SECONDS:
        env.append(f"HUBD_CHAOS_SECONDS={SECONDS}")
    elif MESSAGES != 160:
        env.append(f"HUBD_CHAOS_MESSAGES={MESSAGES}")
    test = (
        "tests/integration/test_chaos.py::TestChaos::"
        f"test_every_acknowledged_message_arrives_once[{variant}-seed{seed}]"
    )
    return " ".join([*env, ".venv/bin/pytest", "-s", shlex.quote(test)])


# ---- the cluster ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChaosEvent:
    """One thing the chaos did to a node, at wall-clock time `at` (the nodes' clock too)."""

    at: float
    node: str
    action: str  # "kill", "wipe" (after a kill), "start"


class Links:
    """H1's links to H2 and H3 through FaultProxies, which a chaos action cuts (partition:
    silence, nothing closed) and heals; on an event loop of their own, so that they outlive
    the chaos's loop and carry mail until the test's end."""

    def __init__(self, source_host: str, targets: dict[str, tuple[str, int]]) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.proxies: dict[str, FaultProxy] = {}
        for name, (host, port) in targets.items():
            listen, _ = free_loopback_address()
            proxy = FaultProxy(listen, host, port, source_host=source_host)
            asyncio.run_coroutine_threadsafe(proxy.start(), self._loop).result(10)
            self.proxies[name] = proxy

    def cut(self, name: str) -> None:
        self._loop.call_soon_threadsafe(self.proxies[name].partition)

    def heal(self, name: str) -> None:
        self._loop.call_soon_threadsafe(self.proxies[name].heal)

    def close(self) -> None:
        for proxy in self.proxies.values():
            asyncio.run_coroutine_threadsafe(proxy.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


class ChaosCluster:
    """M, H1, H2 and H3 as node processes; kill, wipe and restart them; with before_ack, cut
    and heal H1's links to H2 and H3."""

    def __init__(self, root: Path, *, delayed_ack: bool, before_ack: bool = False) -> None:
        self.root = root
        self.addresses = {name: free_loopback_address() for name in NODES}
        self.nodes: dict[str, NodeProcess] = {}
        self.events: list[ChaosEvent] = []
        self.wiped: dict[str, list[Path]] = defaultdict(list)  # where wiped dirs were moved
        self.lost_at_wipe: list[str] = []  # what each wipe destroyed: primaries, shadows
        self.unexpected_exits: list[str] = []
        m = self.hostport("m")
        hub = {"routes": [{"domains": [DOMAIN], "next_hops": [m]}]}
        self.links: Links | None = None
        if before_ack:
            self.links = Links(self.addresses["h1"][0], {h: self.addresses[h] for h in HUBS})
        via = {h: self.link(h) for h in HUBS}
        entry: dict[str, Any] = {
            "routes": [{"domains": [DOMAIN], "next_hops": [via["h2"], via["h3"], m]}]
        }
        if delayed_ack:
            entry["smtp"] = {"delayed_ack": True, "max_ack_delay": f"{int(MAX_ACK_DELAY)}s"}
        if before_ack:
            # Every 250 of H1 means a copy on H2 or H3: H1's disk may go at any time.
            entry["shadow"] = {
                "before_ack": "require",
                "redundancy_peers": [via["h2"], via["h3"]],
            }
        for name, overrides in (
            ("m", {"local_domains": [DOMAIN]}),
            ("h2", hub),
            ("h3", hub),
            ("h1", entry),
        ):
            self._write(name, overrides)

    def _write(self, name: str, overrides: dict[str, Any]) -> None:
        host, port = self.addresses[name]
        common = {
            "delivery": {"connect_timeout": "2s", "command_timeout": "10s"},
            "shadow": {"heartbeat_interval": "1s", "heartbeat_failures": HEARTBEAT_FAILURES},
            # The test's kills have nothing to do with the messages: a poison hold would be
            # right, but it is not what this test measures.
            "queue": {"retry": ["1s"], "poison_threshold": 1000},
            # Each node an acceptor and a delivery process: the chaos also kills one of them.
            "node": {"processes": 2},
        }
        settings = merge(
            merge(node_settings(self.data_dir(name), name, host, port), common), overrides
        )
        config = write_config(self.root / f"{name}.toml", settings)
        self.nodes[name] = NodeProcess(config, (host, port), self.root / f"{name}.log")

    def hostport(self, name: str) -> str:
        host, port = self.addresses[name]
        return f"{host}:{port}"

    def link(self, hub: str) -> str:
        """Where H1 reaches a hub: through its proxy when links are cut, else directly."""
        return self.links.proxies[hub].address if self.links else self.hostport(hub)

    def data_dir(self, name: str) -> Path:
        return self.root / name

    def queue_db(self, name: str) -> Path:
        return self.data_dir(name) / "queue.db"

    def maildir(self) -> Path:
        return self.data_dir("m") / "mailboxes" / DOMAIN

    def is_up(self, name: str) -> bool:
        process = self.nodes[name].process
        return process is not None and process.poll() is None

    def check_alive(self) -> None:
        """Note any node that exited although nobody killed it (a crash of hubd itself)."""
        for name, node in self.nodes.items():
            process = node.process
            if process is not None and process.poll() is not None and process.returncode != -9:
                self.unexpected_exits.append(f"{name} exited with {process.returncode}")
                node.process = None

    async def start(self, name: str) -> None:
        await asyncio.to_thread(self.nodes[name].start, 60.0)
        self.events.append(ChaosEvent(time.time(), name, "start"))

    def kill_child(self, name: str, child: str) -> None:
        """SIGKILL one child process of a node; its supervisor starts another."""
        with contextlib.suppress(KeyError, ProcessLookupError):
            self.nodes[name].kill_child(child)
            self.events.append(ChaosEvent(time.time(), name, f"kill {child}"))

    def kill(self, name: str, *, wipe: bool = False) -> None:
        """SIGKILL; with `wipe`, the data dir goes too (moved aside, for the post-mortem)."""
        self.check_alive()
        self.nodes[name].kill()
        self.events.append(ChaosEvent(time.time(), name, "kill"))
        if wipe:
            (held,) = _query(
                self.queue_db(name),
                "SELECT (SELECT count(*) FROM recipients WHERE state IN ('PENDING', 'HELD')),"
                " (SELECT count(*) FROM shadows)",
            ) or [(0, 0)]
            self.lost_at_wipe.append(f"{name}: {held[0]} primaries, {held[1]} shadows")
            target = self.root / "wiped" / f"{name}-{len(self.wiped[name]) + 1}"
            target.parent.mkdir(exist_ok=True)
            if self.data_dir(name).exists():
                self.data_dir(name).rename(target)  # to the node, the same as rm -rf
            self.wiped[name].append(target)
            self.events.append(ChaosEvent(time.time(), name, "wipe"))

    async def ensure_up(self) -> None:
        self.check_alive()
        await asyncio.gather(*(self.start(n) for n in NODES if not self.is_up(n)))

    def stop_all(self) -> None:
        for node in self.nodes.values():
            node.kill()
        if self.links is not None:
            self.links.close()

    def tracking_dirs(self, name: str) -> list[Path]:
        dirs = [*self.wiped.get(name, []), self.data_dir(name)]
        return [d / "tracking" for d in dirs if (d / "tracking").is_dir()]

    def tracking(self, name: str) -> list[dict[str, Any]]:
        return [e for d in self.tracking_dirs(name) for e in read_events(d)]


def _query(database: Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows from a node's queue database, read-only (the node may be running or killed)."""
    if not database.exists():
        return []
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


# ---- the client ----------------------------------------------------------------------------


@dataclass(slots=True)
class Submission:
    """One message the client tried to hand to H1."""

    ident: str
    recipients: tuple[str, ...]
    started: float
    answered: float = 0.0
    outcome: str = ""  # "250", "refused", "cut"
    reply: str = ""
    queue_id: str = ""

    @property
    def latency(self) -> float:
        return self.answered - self.started


def build_message(seed: int, serial: int) -> tuple[str, tuple[str, ...], bytes]:
    """The message with this serial: its id, recipients and bytes, from the seed alone."""
    rng = random.Random(f"{seed}-{serial}")
    ident = f"chaos-{seed}-{serial}"
    boxes = rng.sample(MAILBOXES, 2 if rng.random() < 0.2 else 1)
    recipients = tuple(f"{box}@{DOMAIN}" for box in boxes)
    filler = "".join(
        "".join(rng.choices("abcdefghijklmnopqrstuvwxyz .,", k=rng.randint(50, 70))) + "\r\n"
        for _ in range(rng.randint(1, 100))
    )
    data = (
        f"From: <{SENDER}>\r\nTo: {', '.join(f'<{r}>' for r in recipients)}\r\n"
        f"Subject: {ident}\r\nMessage-ID: <{ident}@client.test>\r\n\r\n"
        f"id: {ident}\r\n{filler}"
    ).encode()
    return ident, recipients, data


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Load pacing: wait `seconds`, or less when `stop` is set meanwhile."""
    try:
        async with asyncio.timeout(seconds):
            await stop.wait()
    except TimeoutError:
        pass


class Stream:
    """WORKERS sessions to H1 sending new messages until the count (or the time) is reached."""

    def __init__(self, seed: int, address: tuple[str, int], count: int, seconds: float) -> None:
        self._seed = seed
        self._address = address
        self._count = count
        self._deadline = time.monotonic() + seconds if seconds else None
        self._rng = random.Random(f"stream-{seed}")
        self.submissions: list[Submission] = []
        self.finished = asyncio.Event()
        # A count-bounded run goes on (up to 4x) until the chaos has done what the test
        # checks it did: on a slow machine restarts take long, and actions are fewer.
        self.chaos_done: Callable[[], bool] = lambda: True

    @property
    def progress(self) -> float:
        if self._deadline is not None:
            left = self._deadline - time.monotonic()
            return 1.0 - left / SECONDS
        return len(self.submissions) / self._count

    def acknowledged(self) -> list[Submission]:
        return [s for s in self.submissions if s.outcome == "250"]

    def _more(self) -> bool:
        if self._deadline is not None:
            return time.monotonic() < self._deadline
        sent = len(self.submissions)
        return sent < self._count or (not self.chaos_done() and sent < 4 * self._count)

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(WORKERS):
                    group.create_task(self._worker())
        finally:
            self.finished.set()

    async def _connect(self) -> aiosmtplib.SMTP | None:
        host, port = self._address
        client = aiosmtplib.SMTP(
            hostname=host,
            port=port,
            local_hostname="client.test",
            start_tls=False,
            timeout=MAX_ACK_DELAY * 3,
        )
        try:
            await client.connect(timeout=5)
            await client.ehlo()
        except (aiosmtplib.SMTPException, OSError):
            client.close()
            return None
        except BaseException:
            client.close()
            raise
        return client

    async def _worker(self) -> None:
        client: aiosmtplib.SMTP | None = None
        try:
            while self._more():
                if client is None:
                    client = await self._connect()
                    if client is None:  # H1 is down: try again shortly
                        await pause(self.finished, 0.2)
                        continue
                client = await self._send_one(client)
                await pause(self.finished, self._rng.uniform(0.05, 0.45))
        finally:
            if client is not None:
                client.close()

    async def _send_one(self, client: aiosmtplib.SMTP) -> aiosmtplib.SMTP | None:
        """Send the next message; returns the client, or None when the session is gone."""
        ident, recipients, data = build_message(self._seed, len(self.submissions))
        submission = Submission(ident, recipients, time.time())
        self.submissions.append(submission)
        try:
            _, reply = await client.sendmail(SENDER, list(recipients), data)
        except aiosmtplib.SMTPResponseException as error:
            submission.outcome, submission.reply = "refused", f"{error.code} {error.message}"
            try:
                await client.rset()
            except (aiosmtplib.SMTPException, OSError):
                client.close()
                return None
            return client
        except (aiosmtplib.SMTPException, OSError) as error:
            # Cut: not counted; the stream goes on with new messages.
            submission.outcome, submission.reply = "cut", repr(error)
            client.close()
            return None
        finally:
            submission.answered = time.time()
        submission.outcome, submission.reply = "250", reply
        queued = _QUEUED.search(reply)
        submission.queue_id = queued["queue_id"] if queued else ""
        return client


# ---- M's Maildir -----------------------------------------------------------------------------


@dataclass(slots=True)
class MaildirScan:
    """Files in M's Maildir, parsed once each: (message id, mailbox) per path."""

    root: Path
    files: dict[Path, tuple[str, str]] = field(default_factory=dict)

    def refresh(self) -> Counter[tuple[str, str]]:
        for sub in ("new", "cur"):
            for path in self.root.glob(f"*/{sub}/*"):
                if path.is_file() and path not in self.files:
                    found = _MESSAGE_ID.search(path.read_bytes())
                    box = path.parent.parent.name
                    self.files[path] = (found["id"].decode() if found else "", box)
        return Counter(self.files.values())


def acked_by_timeout(submission: Submission) -> bool:
    """Whether H1 gave this 250 because max_ack_delay ran out, not because the message left."""
    return submission.latency >= MAX_ACK_DELAY - 1


def expected_copies(submissions: Iterable[Submission]) -> set[tuple[str, str]]:
    return {(s.ident, r.partition("@")[0]) for s in submissions for r in s.recipients}


# ---- the chaos -------------------------------------------------------------------------------


class Chaos:
    """Kills, wipes and restarts, one action at a time, drawn from random.Random(seed)."""

    def __init__(
        self,
        cluster: ChaosCluster,
        stream: Stream,
        scan: MaildirScan,
        rng: random.Random,
        *,
        wipe_entry: bool,
    ) -> None:
        self.cluster = cluster
        self.stream = stream
        self.scan = scan
        self.rng = rng
        self.wipe_entry = wipe_entry
        self.last_wipe: float | None = None
        self.actions: Counter[str] = Counter()
        self.skipped_wipes = 0

    def _delivered_before(self, moment: float, *, only: Callable[[Submission], bool]) -> bool:
        due = [s for s in self.stream.acknowledged() if s.answered <= moment and only(s)]
        return expected_copies(due) <= set(self.scan.refresh())

    def did_enough(self) -> bool:
        """At least three kills, a hub wiped, and H1 wiped where that is allowed."""
        events = self.cluster.events
        kills = sum(1 for e in events if e.action == "kill")
        wiped = {e.node for e in events if e.action == "wipe"}
        return kills >= 3 and bool(wiped & set(HUBS)) and (not self.wipe_entry or "h1" in wiped)

    def may_wipe(self, name: str) -> bool:
        """One disk at a time: the previous wipe's consequences must have reached M."""
        if self.last_wipe is not None and not self._delivered_before(
            self.last_wipe, only=lambda s: True
        ):
            return False
        if name == "h1":
            # A 250 given by the max_ack_delay timeout may still be only on H1's disk.
            return self._delivered_before(time.time(), only=acked_by_timeout)
        return True

    async def run(self) -> None:
        stop = self.stream.finished
        while not stop.is_set():
            await pause(stop, self.rng.uniform(0.5, 2.5))
            if stop.is_set():
                break
            await self._one_action()
        await self.cluster.ensure_up()

    async def _one_action(self) -> None:
        # The same draws every round, whatever is done with them: a seed replays its draws
        # even where the heal rule or the progress of the stream changes the action.
        actions = [
            ("kill-hub", 3.0),
            ("wipe-hub", 2.0),
            ("kill-m", 2.0),
            ("wipe-hub-while-m-down", 1.0),
            ("kill-hub-while-m-down", 1.5),
            ("kill-entry", 1.5),
            ("kill-two", 1.0),
            ("wipe-entry", 1.5 if self.wipe_entry else 0.0),
            ("kill-child", 2.0),
            ("cut-link", 2.0 if self.cluster.links else 0.0),
        ]
        rng = self.rng
        action = rng.choices([a for a, _ in actions], [w for _, w in actions])[0]
        hub = rng.choice(HUBS)
        pair = rng.sample(NODES, 2)
        child = rng.choice(("acceptor-0", "delivery-0"))
        down = {"hub": rng.uniform(0.3, 6.0), "m": rng.uniform(0.3, 7.0)}
        down |= {"h1": rng.uniform(0.3, 4.0), "pair": rng.uniform(0.3, 6.0)}
        # Each run wipes a hub that holds primaries and shadows, and H1 when that is allowed.
        wiped = {e.node for e in self.cluster.events if e.action == "wipe"}
        if self.stream.progress > 0.4 and not wiped & set(HUBS):
            action = "wipe-hub"
        elif self.wipe_entry and self.stream.progress > 0.6 and "h1" not in wiped:
            action = "wipe-entry"
        if action in ("wipe-hub", "wipe-hub-while-m-down", "wipe-entry"):
            target = "h1" if action == "wipe-entry" else hub
            if not self.may_wipe(target):
                self.skipped_wipes += 1
                action = "kill-entry" if target == "h1" else "kill-hub"
        self.actions[action] += 1
        if action in ("kill-hub", "wipe-hub"):
            await self._outage({hub: down["hub"]}, wipe={hub} if action == "wipe-hub" else set())
        elif action == "kill-m":
            await self._outage({"m": down["m"]})
        elif action == "wipe-hub-while-m-down":
            # M down: the hub piles up primaries (H1 holds their shadows), then loses its disk.
            await self._outage({"m": down["hub"] + 2.0, hub: down["hub"]}, wipe={hub}, stagger=2.0)
        elif action == "kill-hub-while-m-down":
            # The same, disk kept, and down long enough to be declared dead: H1 resubmits its
            # shadows through the other hub, and both copies meet at M when it returns.
            dead = HEARTBEAT_FAILURES + 1.0 + down["hub"] / 2
            await self._outage({"m": dead, hub: dead}, stagger=2.0)
        elif action in ("kill-entry", "wipe-entry"):
            wipe = {"h1"} if action == "wipe-entry" else set()
            await self._outage({"h1": down["h1"]}, wipe=wipe)
        elif action == "cut-link":
            # H1 cut off from a hub, past the heartbeat limit half the time, then healed.
            await self._cut(hub, down["pair"] * 1.5)
        elif action == "kill-child":
            # One process of a node, not the node: its supervisor restarts it at once.
            self.cluster.kill_child(pair[0], child)
        else:  # kill-two
            await self._outage({pair[0]: down["pair"], pair[1]: down["hub"]})

    async def _cut(self, hub: str, seconds: float) -> None:
        links = self.cluster.links
        assert links is not None
        links.cut(hub)
        self.cluster.events.append(ChaosEvent(time.time(), hub, "cut"))
        await pause(self.stream.finished, seconds)
        links.heal(hub)
        self.cluster.events.append(ChaosEvent(time.time(), hub, "heal"))

    async def _outage(
        self,
        downs: dict[str, float],
        *,
        wipe: set[str] | frozenset[str] = frozenset(),
        stagger: float = 0.0,
    ) -> None:
        """Kill each node (the first `stagger` seconds before the others), restart it after its
        time down (sooner once the stream has ended); a node in `wipe` loses its data dir."""
        names = list(downs)
        for index, name in enumerate(names):
            if index == 1 and stagger:
                await pause(self.stream.finished, stagger)
            self.cluster.kill(name, wipe=name in wipe)
            if name in wipe:
                self.last_wipe = time.time()
        started = time.monotonic()
        for name in sorted(names, key=lambda n: downs[n]):
            await pause(self.stream.finished, max(0.0, started + downs[name] - time.monotonic()))
            await self.cluster.start(name)


# ---- the report ------------------------------------------------------------------------------


def _when(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()


@dataclass(slots=True)
class Report:
    """Figures from the tracking logs of every node, wiped ones included."""

    cluster: ChaosCluster
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.events = {name: self.cluster.tracking(name) for name in NODES}

    def count(self, event: str, nodes: Iterable[str] = NODES) -> int:
        return sum(1 for n in nodes for e in self.events[n] if e["event"] == event)

    def trail(self, ident: str, box: str) -> list[str]:
        """Every tracking line about one message id and mailbox, across nodes, in time order."""
        queue_ids: set[tuple[str, str]] = set()
        for name, events in self.events.items():
            for e in events:
                if e.get("message_id") == f"<{ident}@client.test>":
                    queue_ids.add((name, e["queue_id"]))
        lines = [
            (
                e["time"],
                f"{e['time']} {n} {e['event']} {e['queue_id']} {e.get('next_hop')} "
                f"{e.get('reply')}",
            )
            for n, events in self.events.items()
            for e in events
            if (n, e["queue_id"]) in queue_ids
            and any(r.lower().startswith(f"{box}@") for r in e["recipients"] or [f"{box}@"])
        ]
        return [text for _, text in sorted(lines)]

    def failovers(self) -> list[tuple[str, float, float | None, float | None]]:
        """Per kill of a node others hold shadows for: (node, kill time, seconds to the first
        RESUBMIT naming it, seconds to M's first DELIVER of a message so resubmitted)."""
        message_ids: dict[tuple[str, str], str] = {}
        for name, events in self.events.items():
            for e in events:
                if e.get("message_id"):
                    message_ids[(name, e["queue_id"])] = e["message_id"]
        delivered: dict[str, list[float]] = defaultdict(list)
        for e in self.events["m"]:
            if e["event"] == "DELIVER" and e.get("message_id"):
                delivered[e["message_id"]].append(_when(e))
        kills = [e for e in self.cluster.events if e.action == "kill" and e.node != "h1"]
        out: list[tuple[str, float, float | None, float | None]] = []
        for index, kill in enumerate(kills):
            later = [k.at for k in kills[index + 1 :] if k.node == kill.node]
            until = later[0] if later else float("inf")
            address = self.cluster.hostport(kill.node)
            resubmits = [
                (_when(e), name, e["queue_id"])
                for name in ("h1", *HUBS)
                for e in self.events[name]
                if e["event"] == "RESUBMIT"
                and e["next_hop"] == address
                and kill.at <= _when(e) < until
            ]
            if not resubmits:
                out.append((kill.node, kill.at, None, None))
                continue
            first = min(t for t, _, _ in resubmits)
            deliveries = [
                when
                for at, name, queue_id in resubmits
                for when in delivered.get(message_ids.get((name, queue_id), ""), [])
                if when >= at
            ]
            out.append(
                (
                    kill.node,
                    kill.at,
                    first - kill.at,
                    min(deliveries) - kill.at if deliveries else None,
                )
            )
        return out


def _seconds(values: list[float]) -> str:
    if not values:
        return "n/a"
    return (
        f"n={len(values)} min {min(values):.1f}s median {statistics.median(values):.1f}s "
        f"max {max(values):.1f}s"
    )


def _queues(cluster: ChaosCluster) -> dict[str, tuple[int, int]]:
    """(messages, shadows) in each node's queue."""
    out = {}
    for name in NODES:
        rows = _query(
            cluster.queue_db(name),
            "SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM shadows)",
        )
        out[name] = rows[0] if rows else (0, 0)
    return out


def _queue_listing(cluster: ChaosCluster) -> str:
    lines = []
    for name in NODES:
        rows = _query(
            cluster.queue_db(name),
            "SELECT m.queue_id, m.message_id, m.origin, r.address, r.state, r.last_error "
            "FROM messages m JOIN recipients r ON r.message = m.id LIMIT 20",
        )
        lines += [f"  {name}: {row}" for row in rows]
    return "\n".join(lines)


# ---- the test --------------------------------------------------------------------------------


async def run_chaos(
    cluster: ChaosCluster, seed: int, *, wipe_entry: bool
) -> tuple[Stream, Chaos, MaildirScan]:
    """Start the nodes, stream messages to H1 with chaos alongside, end with every node up."""
    for name in NODES:
        await cluster.start(name)
    stream = Stream(seed, cluster.addresses["h1"], MESSAGES, SECONDS)
    scan = MaildirScan(cluster.maildir())
    chaos = Chaos(cluster, stream, scan, random.Random(seed), wipe_entry=wipe_entry)
    stream.chaos_done = chaos.did_enough
    async with asyncio.TaskGroup() as group:
        group.create_task(stream.run(), name="stream")
        group.create_task(chaos.run(), name="chaos")
    return stream, chaos, scan


class TestChaos:
    @pytest.mark.timeout(SECONDS + DELIVERY_WAIT + DRAIN_WAIT + 300)
    @pytest.mark.parametrize("seed", SEEDS, ids=[f"seed{s}" for s in SEEDS])
    @pytest.mark.parametrize("variant", VARIANTS)
    def test_every_acknowledged_message_arrives_once(
        self, tmp_path: Path, variant: str, seed: int
    ) -> None:
        """Random kills and wipes of hubs lose no acknowledged message and deliver none twice."""
        replay = f"seed {seed} ({variant}); replay with: {replay_command(variant, seed)}"
        print(f"\nchaos {replay}")
        began = time.monotonic()
        cluster = ChaosCluster(
            tmp_path, delayed_ack=variant == "delayed-ack", before_ack=variant == "before-ack"
        )
        try:
            stream, chaos, scan = asyncio.run(
                run_chaos(cluster, seed, wipe_entry=variant != "plain")
            )
            chaos_done = time.monotonic()
            acknowledged = stream.acknowledged()
            wanted = expected_copies(acknowledged)
            with contextlib.suppress(TimeoutError):  # reported below, with each one's trail
                wait_until(
                    lambda: wanted <= set(scan.refresh()),
                    DELIVERY_WAIT,
                    "every acknowledged message in M's Maildir",
                )
            delivered_at = time.monotonic()
            try:
                wait_until(
                    lambda: all(q == (0, 0) for q in _queues(cluster).values()),
                    DRAIN_WAIT,
                    "every queue to drain",
                )
                drained = True
            except TimeoutError:
                drained = False
            cluster.check_alive()
            counts = scan.refresh()
        finally:
            cluster.stop_all()

        report = Report(cluster)
        outcomes = Counter(s.outcome for s in stream.submissions)
        kills = sum(1 for e in cluster.events if e.action == "kill")
        cuts = sum(1 for e in cluster.events if e.action == "cut")
        wipes = Counter(e.node for e in cluster.events if e.action == "wipe")
        failovers = report.failovers()
        lost = sorted(wanted - set(counts))
        doubled = sorted(key for key, n in counts.items() if n > 1)
        strays = sorted(key for key in counts if not key[0])
        timed_out = [s for s in acknowledged if acked_by_timeout(s)]
        print(
            f"chaos seed {seed} {variant}: sent {len(stream.submissions)} {dict(outcomes)}, "
            f"acknowledged {len(acknowledged)} ({len(wanted)} copies), Maildir files "
            f"{len(scan.files)}, lost {len(lost)}, duplicated {len(doubled)}\n"
            f"  kills {kills}, link cuts {cuts}, wipes {dict(wipes)}, "
            f"actions {dict(chaos.actions)}, "
            f"wipes deferred (previous not healed) {chaos.skipped_wipes}\n"
            f"  held by wiped nodes: {'; '.join(cluster.lost_at_wipe)}\n"
            f"  RESUBMIT at hubs {report.count('RESUBMIT', ('h1', *HUBS))}, DUPLICATE at M "
            f"{report.count('DUPLICATE', ('m',))}, at hubs "
            f"{report.count('DUPLICATE', ('h1', *HUBS))}, POISON {report.count('POISON')}\n"
            f"  ack latency p50 "
            f"{statistics.median([s.latency for s in acknowledged] or [0]):.2f}s max "
            f"{max([s.latency for s in acknowledged] or [0]):.2f}s, acks by max_ack_delay "
            f"{len(timed_out)}\n"
            f"  kill -> first RESUBMIT: {_seconds([f[2] for f in failovers if f[2] is not None])}"
            f"\n  kill -> first resubmitted DELIVER at M: "
            f"{_seconds([f[3] for f in failovers if f[3] is not None])}\n"
            f"  chaos {chaos_done - began:.1f}s, to delivery {delivered_at - chaos_done:.1f}s, "
            f"drained {drained}"
        )

        def trails(keys: list[tuple[str, str]]) -> str:
            return "\n".join(
                f"{key}:\n    " + "\n    ".join(report.trail(*key)) for key in keys[:5]
            )

        assert not cluster.unexpected_exits, f"{cluster.unexpected_exits}; {replay}"
        assert not lost, f"{len(lost)} acknowledged copies lost {lost[:10]}; {replay}\n" + trails(
            lost
        )
        assert not doubled, f"{len(doubled)} copies delivered twice; {replay}\n" + trails(doubled)
        assert not strays, f"Maildir files without a chaos Message-ID; {replay}"
        assert drained, f"queues not drained: {_queues(cluster)}; {replay}\n" + _queue_listing(
            cluster
        )
        # The run did what it says: load, kills, and a wipe of a hub (and of H1 when allowed).
        assert len(acknowledged) >= len(stream.submissions) // 2, replay
        assert kills >= 3, replay
        assert wipes.keys() & set(HUBS), f"no hub was wiped; {replay}"
