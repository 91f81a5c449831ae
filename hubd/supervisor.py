"""The supervisor of a node of several processes: one owner of the queue, sockets and children.

Owns: preparing the queue file (check, migrate, re-shard) and recovering every lease before
any child starts; serving the admin API (hubd/admin/: reads of its own, writes through this
writer, wake-ups to every delivery process; beside a node of one process too); binding the
listening sockets once (children inherit them, no
SO_REUSEPORT, so a second node on an address fails instead of sharing it); the pipes
between children; starting each acceptor and delivery process, restarting one that dies
after start-up (its leases released and a crash counted for what it held), stopping the
node when one fails at start-up; the WAL checkpoints; draining every child on SIGTERM;
measuring back pressure (free disk, the resident size of all the node's processes, queued
recipients) and sending each change of level to every child.
Public: run_node(), Running, Supervisor, Plan, plan_processes(), usable_cores().
Failures: a child that fails at start-up stops the node (exit 1); StorageError and OSError
from preparing the queue or binding propagate before any child runs.
Limits: children are `python -m hubd.worker` processes (a fresh interpreter each: nothing of
the supervisor's state is shared but what is passed); they die with the supervisor
(PR_SET_PDEATHSIG).
See also: hubd/worker.py (a child), hubd/node.py (what a child runs), hubd/signals.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from hubd.admin.server import serving
from hubd.backpressure import Level
from hubd.config import Config, HostPort
from hubd.logs import current_format
from hubd.metrics import observe_commit
from hubd.pressure import Gauge, gauge_of, owner_probes
from hubd.queue_owner import recover_queue, start_upkeep
from hubd.roles import Role
from hubd.signals import FLUSH, send_pressure
from hubd.smtp.shared_counters import counters_file
from hubd.tracking import Tracker
from storage import Repository, Writer, open_database
from storage.errors import is_disk_full, log_failure

log = logging.getLogger(__name__)

RESTART_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)  # seconds, for a child that keeps dying
STABLE_AFTER = 60.0  # a child that lived this long starts the backoff afresh


class Running(Protocol):
    """A node that started: what `hubd serve` tells its user."""

    @property
    def relay_addresses(self) -> list[HostPort]: ...

    @property
    def submission_addresses(self) -> list[HostPort]: ...

    @property
    def submission_tls_addresses(self) -> list[HostPort]: ...


async def run_node(
    config: Config, config_path: Path, lock_fd: int, on_ready: Callable[[Running], None]
) -> int:
    """Run a node until SIGTERM, in one process or as a supervisor of several; exit status."""
    plan = plan_processes(config.node.processes, usable_cores())
    if plan.single:
        from hubd.node import Node  # a supervisor never runs one: it stays small without it

        async with serving(config) as admin:
            node = Node(config)

            def ready(started: Node) -> None:
                admin.attach(started.repository, started.flush)
                admin.pressure = started.pressure
                admin.set_ready(True)
                on_ready(started)

            await node.run_until_signalled(ready)
        return 0
    return await Supervisor(config, config_path, plan, lock_fd=lock_fd).run(on_ready)


@dataclass(frozen=True, slots=True)
class Plan:
    """How many processes of each kind a node runs."""

    acceptors: int
    deliverers: int

    @property
    def single(self) -> bool:
        return self.acceptors + self.deliverers <= 1


def usable_cores() -> int:
    """CPUs this process may run on, capped by a cgroup (v2) CPU quota."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
    except (OSError, ValueError):
        return cores
    if quota == "max":
        return cores
    return max(1, min(cores, math.ceil(int(quota) / int(period))))


def plan_processes(configured: int, cores: int) -> Plan:
    """`[node] processes` (0: one per usable core) split into acceptors and deliverers.

    Receiving (a connection per message) costs more than delivering over reused
    connections, so acceptors get the larger half.
    """
    total = configured or cores
    if total <= 1:
        return Plan(1, 0)
    acceptors = (total + 1) // 2
    return Plan(acceptors, total - acceptors)


@dataclass(slots=True)
class _Child:
    """One slot of the node: its role, the fds it gets, and the process in it now."""

    name: str
    role: Role
    fds: dict[str, int | list[int]]
    ready_read: int  # the child writes a line here once it accepts or delivers
    ready_write: int
    pressure_write: int  # the node's back-pressure level goes to the child here
    generation: int = 0
    process: asyncio.subprocess.Process | None = None
    owner: str = ""
    started_at: float = 0.0
    failures: int = 0
    ready: bool = False
    ready_event: asyncio.Event = field(default_factory=asyncio.Event)
    counters: dict[str, object] | None = None  # an acceptor's region of the shared counters


def _bind(address: HostPort, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.create_server((address.host, address.port), family=family, backlog=backlog)
    sock.set_inheritable(True)
    return sock


def _pipe() -> tuple[int, int]:
    read, write = os.pipe2(os.O_NONBLOCK)
    os.set_inheritable(read, True)
    os.set_inheritable(write, True)
    return read, write


class Supervisor:
    """Runs a node as acceptor and delivery processes over one queue file."""

    def __init__(
        self,
        config: Config,
        config_path: Path,
        plan: Plan,
        *,
        lock_fd: int,
        clock: Callable[[], float] = time.time,
        worker: Sequence[str] = (sys.executable, "-m", "hubd.worker"),
    ) -> None:
        self.config = config
        self._config_path = config_path
        self._plan = plan
        self._lock_fd = lock_fd
        self._clock = clock
        self._worker = worker
        self._stopping = asyncio.Event()
        self._failed: str | None = None
        self._started = False  # every child was ready once: from now on, deaths restart
        self._children: list[_Child] = []
        self._wakes: list[int] = []  # write ends of the delivery processes' wake-up pipes
        self.relay_addresses: list[HostPort] = []
        self.submission_addresses: list[HostPort] = []
        self.submission_tls_addresses: list[HostPort] = []
        self._run_id = f"{os.getpid()}-{secrets.token_hex(3)}"
        self._level = Level.NORMAL

    async def run(self, on_ready: Callable[[Running], None]) -> int:
        """Prepare, start every child, supervise until SIGTERM; the node's exit status."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stopping.set)
        config = self.config
        database = await open_database(
            config.node.data_dir / "queue.db", shards=self._plan.deliverers, now=self._clock
        )
        # The admin API writes beside the children: it takes turns on the same lock.
        writer = Writer(database.write_engine, lock=database.write_lock, on_commit=observe_commit)
        tracker = Tracker(config.node.data_dir / "tracking", config.node.name, self._clock)
        try:
            async with asyncio.TaskGroup() as group, serving(config, clock=self._clock) as admin:
                group.create_task(writer.run(), name="storage-writer")
                repository = Repository(database, writer, shards=self._plan.deliverers)
                await recover_queue(
                    repository, tracker, f"{self._run_id}-start", config.queue.poison_threshold
                )
                admin.attach(repository, self._flush_all)
                admin.pressure = lambda: self._level
                upkeep = start_upkeep(database, repository, group)
                backlog = config.smtp.listen_backlog
                # Every acceptor serves every listener: each gets all the bound sockets.
                bound = {
                    kind: [_bind(a, backlog) for a in addresses]
                    for kind, addresses in (
                        ("listen", config.smtp.listen),
                        ("submission", config.submission.listen),
                        ("submission_tls", config.submission.tls_listen),
                    )
                }
                sockets = [sock for kind in bound.values() for sock in kind]
                self.relay_addresses = _addresses(config.smtp.listen, bound["listen"])
                self.submission_addresses = _addresses(
                    config.submission.listen, bound["submission"]
                )
                self.submission_tls_addresses = _addresses(
                    config.submission.tls_listen, bound["submission_tls"]
                )
                self._children = self._slots(bound)
                gauge = self._gauge(database.path, tracker)
                if gauge is not None:
                    group.create_task(gauge.run(), name="back-pressure")
                for child in self._children:
                    group.create_task(self._keep(child, repository, tracker), name=child.name)
                if await self._all_ready():
                    self._started = True
                    admin.set_ready(True)
                    on_ready(self)
                await self._stopping.wait()
                if gauge is not None:
                    gauge.stop()
                admin.set_ready(False)
                await self._stop_children()
                await upkeep.stop()
                for sock in sockets:
                    sock.close()
                await writer.stop()
        finally:
            tracker.close()
            await database.close()
        if self._failed is not None:
            log.error("%s", self._failed)
            return 1
        return 0

    def _gauge(self, database: Path, tracker: Tracker) -> Gauge | None:
        """The node's one measure of its disk, memory and queue (acceptors add their own
        bytes in flight): cheap reads done once, not once per process."""
        probes = owner_probes(
            self.config.node.data_dir, database, lambda: [os.getpid(), *self._child_pids()]
        )
        return gauge_of(self.config.backpressure, probes, tracker=tracker, on_change=self._publish)

    def _child_pids(self) -> list[int]:
        return [
            c.process.pid
            for c in self._children
            if c.process is not None and c.process.returncode is None
        ]

    def _publish(self, level: Level) -> None:
        self._level = level
        for child in self._children:
            send_pressure(child.pressure_write, level)

    def _slots(self, bound: dict[str, list[socket.socket]]) -> list[_Child]:
        plan = self._plan
        wakes = [_pipe() for _ in range(plan.deliverers)]
        self._wakes = [w for _, w in wakes]
        departures = [_pipe() for _ in range(plan.acceptors)]
        common: dict[str, int | list[int]] = {
            "wake": [w for _, w in wakes],
            "departures": [w for _, w in departures],
            "lock": self._lock_fd,
        }
        # Client limits are node-wide: every acceptor counts in one shared file.
        counters = counters_file(plan.acceptors)
        key = secrets.token_hex(16)
        children = []
        for index in range(plan.acceptors):
            role = Role(
                accept=True,
                shard=None,
                shards=plan.deliverers,
                peers=False,
                owns_queue=False,
                acceptors=plan.acceptors,
            )
            fds = {
                **common,
                **{kind: [s.fileno() for s in socks] for kind, socks in bound.items()},
                "departures_read": departures[index][0],
                "counters": counters,
            }
            child = _child(f"acceptor-{index}", role, fds)
            child.counters = {"region": index, "regions": plan.acceptors, "key": key}
            children.append(child)
        for shard in range(plan.deliverers):
            role = Role(
                accept=False,
                shard=shard,
                shards=plan.deliverers,
                peers=shard == 0,
                owns_queue=False,
            )
            fds = {**common, "listen": [], "wake_read": wakes[shard][0]}
            children.append(_child(f"delivery-{shard}", role, fds))
        return children

    def _flush_all(self) -> None:
        """After an operator's retry: every delivery process tries down hops again, now."""
        for fd in self._wakes:
            with contextlib.suppress(BlockingIOError):  # full: it is about to read anyway
                os.write(fd, FLUSH)

    async def _all_ready(self) -> bool:
        async def every_child() -> None:
            for child in self._children:
                await child.ready_event.wait()

        everyone = asyncio.create_task(every_child())
        stop = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait([stop, everyone], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            everyone.cancel()
        return all(c.ready for c in self._children) and not self._stopping.is_set()

    async def _keep(self, child: _Child, repository: Repository, tracker: Tracker) -> None:
        """Run a slot's process; restart it when it dies after start-up."""
        while not self._stopping.is_set():
            status = await self._spawn_and_wait(child)
            if self._stopping.is_set():
                return
            await self._recover(child, repository, tracker)
            if not self._started:
                self._failed = f"{child.name} failed at start-up (exit status {status})"
                self._stopping.set()
                return
            lived = self._clock() - child.started_at
            child.failures = 1 if lived > STABLE_AFTER else child.failures + 1
            delay = RESTART_BACKOFF[min(child.failures, len(RESTART_BACKOFF)) - 1]
            log.error("%s died (exit status %s); restarting in %.1fs", child.name, status, delay)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()

    async def _recover(self, child: _Child, repository: Repository, tracker: Tracker) -> None:
        """Release what the dead child held; on a full disk, again each second until it
        is done (its replacement must not start beside leases nobody will release)."""
        while True:
            try:
                await recover_queue(
                    repository,
                    tracker,
                    self._run_id,
                    self.config.queue.poison_threshold,
                    dead_run=child.owner,
                )
                return
            except Exception as error:
                if not is_disk_full(error) or self._stopping.is_set():
                    raise
                log_failure(log, f"releasing what {child.name} held", error)
            await asyncio.sleep(1.0)

    async def _spawn_and_wait(self, child: _Child) -> int:
        child.generation += 1
        child.owner = f"{self._run_id}-{child.name}-{child.generation}"
        child.ready = False
        send_pressure(child.pressure_write, self._level)  # a new child starts at the level now
        fds = {**child.fds, "ready": child.ready_write}
        spec = {
            "config_path": str(self._config_path),
            "role": asdict(child.role),
            "owner": child.owner,
            "parent": os.getpid(),
            "log_level": logging.getLogger().getEffectiveLevel(),
            "log_format": str(current_format()),
            "fds": fds,
            "counters": child.counters,
        }
        passed = _fd_list(fds)
        process = await asyncio.create_subprocess_exec(
            *self._worker,
            child.name,
            stdin=asyncio.subprocess.PIPE,
            pass_fds=passed,
        )
        child.process = process
        child.started_at = self._clock()
        assert process.stdin is not None
        process.stdin.write(json.dumps(spec).encode())
        process.stdin.close()
        watch = asyncio.create_task(self._watch_ready(child))
        try:
            return await process.wait()
        finally:
            watch.cancel()

    async def _watch_ready(self, child: _Child) -> None:
        loop = asyncio.get_running_loop()
        got = asyncio.Event()
        loop.add_reader(child.ready_read, got.set)
        try:
            await got.wait()
            with contextlib.suppress(BlockingIOError):
                if os.read(child.ready_read, 64):
                    child.ready = True
                    child.ready_event.set()
        finally:
            loop.remove_reader(child.ready_read)

    async def _stop_children(self) -> None:
        """SIGTERM every child (each drains), SIGKILL what is left after the grace."""
        processes = [c.process for c in self._children if c.process is not None]
        for process in processes:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        grace = self.config.delivery.command_timeout.total_seconds() + 30.0
        waits = [asyncio.create_task(p.wait()) for p in processes]
        if not waits:
            return
        _, pending = await asyncio.wait(waits, timeout=grace)
        for process in processes:
            if process.returncode is None:
                log.error("a child did not drain within %.0fs; killing it", grace)
                process.kill()
        if pending:
            await asyncio.wait(pending)


def _child(name: str, role: Role, fds: dict[str, int | list[int]]) -> _Child:
    """A slot with its own pipes: one to say it is ready, one to hear the pressure level."""
    ready_read, ready_write = _pipe()
    pressure_read, pressure_write = _pipe()
    os.set_inheritable(pressure_write, False)
    return _Child(
        name, role, {**fds, "pressure_read": pressure_read}, ready_read, ready_write, pressure_write
    )


def _addresses(configured: list[HostPort], sockets: list[socket.socket]) -> list[HostPort]:
    """The addresses bound, with the ports the kernel chose for port 0."""
    return [
        HostPort(host=a.host, port=s.getsockname()[1])
        for a, s in zip(configured, sockets, strict=True)
    ]


def _fd_list(fds: dict[str, int | list[int]]) -> list[int]:
    out: set[int] = set()
    for value in fds.values():
        out.update([value] if isinstance(value, int) else value)
    return sorted(out)
