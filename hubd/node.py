"""One hubd node, or one process of it: its parts built in one place and run under a TaskGroup.

Owns: what a process of the node is made of for its role (acceptor: listeners and intake;
delivery: the scheduler of its shard; peers: heartbeats, resubmission and the pickup
directories), the order of start-up (queue, writer, delivery, heartbeats, pickup, then
listeners) and of the drain (stop accepting, finish the file being picked up, let commits
in flight answer, finish deliveries in flight, commit, close).
Public: Node (Role and ALL live in hubd/roles.py).
Failures: StorageError (SchemaTooNew, QueueCorrupt) at start; OSError when a port is taken;
a part that dies takes the whole node down with its exception (never silently).
See also: hubd/supervisor.py (several processes), hubd/cli.py (`hubd serve`),
DESIGN.md (the life of a message).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import os
import random
import secrets
import signal
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import aiosmtplib

from hubd.backpressure import Level
from hubd.config import Config, HostPort, ShadowConfig
from hubd.delivery.maildir import MaildirCourier
from hubd.delivery.notices import notifier_for
from hubd.delivery.retry import RetryPolicy
from hubd.delivery.scheduler import Scheduler
from hubd.delivery.smtp_client import SmtpCourier, SmtpSettings
from hubd.intake import Intake
from hubd.metrics import observe_commit
from hubd.pickup import Pickup, PickupLimits, Source
from hubd.pressure import Gauge, Probe, gauge_of, on_loop, owner_probes
from hubd.queue_owner import recover_queue, start_upkeep
from hubd.roles import ALL, Role
from hubd.routing import HopKind, Router, RouteTable
from hubd.routing.mx import MxResolver
from hubd.shadow.client import ShadowClient
from hubd.shadow.delayed_ack import Departures
from hubd.shadow.heartbeat import Heartbeat
from hubd.shadow.protocol import Hello
from hubd.shadow.redundancy import Redundancy
from hubd.signals import LocalSignals, Signals
from hubd.smtp.credentials import Credentials
from hubd.smtp.executor import Executor
from hubd.smtp.limits import LocalCounters, NodeCounters, session_limits
from hubd.smtp.policy import BeforeAck, ListenerPolicy, ShadowOffer, SubmissionOffer
from hubd.smtp.relay import RelayPolicy
from hubd.smtp.server import Inbound, Listener, start_listener
from hubd.tls import ServerTls
from hubd.tracking import Tracker
from hubd.users import UsersFile
from storage import (
    Database,
    Repository,
    ShadowLedger,
    Upkeep,
    Writer,
    attach_database,
    open_database,
)

log = logging.getLogger(__name__)


def _before_ack(shadow: ShadowConfig) -> BeforeAck | None:
    if shadow.before_ack == "off":
        return None
    return BeforeAck(shadow.before_ack == "require", shadow.before_ack_timeout.total_seconds())


def _source_host(listen: Sequence[HostPort]) -> str | None:
    # Bind outbound connections to the node's own address, so peers on loopback can tell
    # nodes apart; a wildcard listener leaves the choice to the kernel.
    if not listen:
        return None
    try:
        address = ipaddress.ip_address(listen[0].host)
    except ValueError:
        return None
    return None if address.is_unspecified else str(address)


@dataclass(frozen=True, slots=True)
class _Core:
    """What every process of a node has: the queue, its writer and the tracking log."""

    database: Database
    writer: Writer
    repository: Repository
    ledger: ShadowLedger
    tracker: Tracker
    me: Hello
    router: Router


@dataclass(frozen=True, slots=True)
class _Delivery:
    """A delivery process's running parts, stopped in the drain."""

    scheduler: Scheduler
    heartbeat: Heartbeat | None  # only in the one process that watches peers


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception that took the node down (a port taken, a part that died); the others
    (usually the cancellations it caused) are logged."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        error = pending.pop()
        if isinstance(error, BaseExceptionGroup):
            pending.extend(reversed(error.exceptions))
        else:
            leaves.append(error)
    first = next((e for e in leaves if not isinstance(e, asyncio.CancelledError)), leaves[0])
    for other in leaves:
        if other is not first and not isinstance(other, asyncio.CancelledError):
            log.error("also failed: %r", other)
    return first


class Node:
    """A hubd node, or one process of it, inside the current event loop."""

    def __init__(
        self,
        config: Config,
        *,
        role: Role = ALL,
        sockets: Sequence[socket.socket] = (),
        submission_sockets: Sequence[socket.socket] = (),
        tls_sockets: Sequence[socket.socket] = (),
        signals: Signals | None = None,
        owner: str | None = None,
        counters: NodeCounters | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        # Shared with the node's other acceptors when it has several (hubd/supervisor.py).
        self._counters = counters if counters is not None else LocalCounters()
        self.role = role
        self._sockets = sockets
        self._submission_sockets = submission_sockets
        self._tls_sockets = tls_sockets
        self._local = LocalSignals() if signals is None else None
        self._signals: Signals = signals if signals is not None else self._local  # type: ignore[assignment]
        self._owner = owner or f"{os.getpid()}-{secrets.token_hex(4)}"
        self._clock = clock
        self._rng = rng or random.Random()
        self._inbound: Inbound | None = None
        self._credentials: Credentials | None = None
        self._copies: Redundancy | None = None  # shadow before acknowledgement's copier
        self.listeners: list[Listener] = []
        self._relay: list[Listener] = []
        self._submission: list[Listener] = []
        self._submission_tls: list[Listener] = []
        self._departures = Departures()
        self._ready = asyncio.Event()
        self._stopping = asyncio.Event()
        self._grace = 10.0
        self._runner: asyncio.Task[None] | None = None
        self._core: _Core | None = None
        self._wake: Callable[[], None] = lambda: None
        self._flush: Callable[[], None] = lambda: None
        self.pickup: Pickup | None = None  # scans the pickup directories (one process)
        self._published = Level.NORMAL  # the level the supervisor measured (several processes)
        self._gauge: Gauge | None = None  # what this process measures itself

    # -- what tests and the supervisor look at ------------------------------------------

    @property
    def relay_addresses(self) -> list[HostPort]:
        """The addresses the relay listeners really bound (ports resolved when 0)."""
        return [listener.address for listener in self._relay]

    @property
    def submission_addresses(self) -> list[HostPort]:
        """The addresses the STARTTLS submission listeners really bound."""
        return [listener.address for listener in self._submission]

    @property
    def submission_tls_addresses(self) -> list[HostPort]:
        """The addresses the implicit-TLS submission listeners really bound."""
        return [listener.address for listener in self._submission_tls]

    @property
    def database(self) -> Database:
        return self._started().database

    @property
    def repository(self) -> Repository:
        return self._started().repository

    @property
    def ledger(self) -> ShadowLedger:
        return self._started().ledger

    def _started(self) -> _Core:
        if self._core is None:
            raise RuntimeError("the node has not started")
        return self._core

    # -- life ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the queue, resume its work, start accepting; raise if any of it fails."""
        self._runner = asyncio.create_task(self._run(), name=f"node-{self.config.node.name}")
        ready = asyncio.create_task(self._ready.wait())
        await asyncio.wait({self._runner, ready}, return_when=asyncio.FIRST_COMPLETED)
        if not self._ready.is_set():
            ready.cancel()
            await self._runner  # raises what stopped the start-up
            raise RuntimeError("the node stopped during start-up")

    async def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, drain sessions and deliveries (bounded), close the queue."""
        if self._runner is None:
            return
        self._grace = grace
        self._stopping.set()
        with contextlib.suppress(Exception):  # already raised to whoever watched it
            await self._runner

    async def wait(self) -> None:
        """Until the node stops; raises when a part of it died."""
        assert self._runner is not None
        await self._runner

    async def run_until_signalled(self, on_ready: Callable[[Node], None] | None = None) -> None:
        """Start, serve until SIGTERM or SIGINT (or a part dies), then stop cleanly."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stopping.set)
        await self.start()
        if on_ready is not None:
            on_ready(self)
        # What start-up made (modules, the schema, config) lives as long as the process:
        # out of the collector's sight, a full collection no longer walks all of it.
        gc.freeze()
        await self.wait()

    def wake(self) -> None:
        """New work may be due for this process's delivery shard (from another process)."""
        self._wake()

    @property
    def inflight(self) -> int:
        """Bytes of DATA this process received and has not yet committed or dropped."""
        return self._inbound.inflight if self._inbound is not None else 0

    def pressure(self) -> Level:
        """The back-pressure level sessions and pickup obey now: the worse of what this
        process measures and what the supervisor published."""
        own = self._gauge.level if self._gauge is not None else Level.NORMAL
        return max(own, self._published)

    def publish_pressure(self, level: Level) -> None:
        """The node's level, as the supervisor measured it."""
        self._published = level
        self._pressure_changed(level)

    def _pressure_changed(self, _level: Level) -> None:
        # Medium and High stop the pickup directories; delivery, discard notices and
        # heartbeats never stop, so the node can drain.
        if self.pickup is None:
            return
        if self.pressure() >= Level.MEDIUM:
            self.pickup.pause()
        else:
            self.pickup.resume()

    def flush(self) -> None:
        """An operator asked for a retry: try next hops known down again, and look now."""
        self._flush()

    def departed(self, queue_ids: Iterable[str]) -> None:
        """These messages left the node (reported by a delivery process)."""
        self._departures.left(queue_ids)

    async def _run(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            core = await self._open(stack)
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(core.writer.run(), name="storage-writer")
                    upkeep = await self._own_queue(core, group)
                    delivery = await self._start_delivery(core, group, stack)
                    pickup = self._start_pickup(core, group)
                    self._start_gauge(core, group)
                    await self._listen(core, stack)
                    self._ready.set()
                    await self._stopping.wait()
                    log.info("stopping")
                    if upkeep is not None:
                        await upkeep.stop()
                    await self._drain(core, delivery, pickup)
            except BaseExceptionGroup as group:
                raise _first_error(group) from None

    async def _open(self, stack: contextlib.AsyncExitStack) -> _Core:
        config, role = self.config, self.role
        data_dir = config.node.data_dir
        path = data_dir / "queue.db"
        if role.owns_queue:
            database = await open_database(path, shards=role.shards, now=self._clock)
        else:
            database = await attach_database(path)
        stack.push_async_callback(database.close)
        tracker = Tracker(
            data_dir / "tracking",
            config.node.name,
            self._clock,
            max_file_size=config.tracking.max_file_size,
            max_age=config.tracking.max_age,
        )
        stack.callback(tracker.close)
        writer = Writer(database.write_engine, lock=database.write_lock, on_commit=observe_commit)
        core = _Core(
            database=database,
            writer=writer,
            repository=Repository(database, writer, shards=role.shards),
            ledger=ShadowLedger(writer, database.read_engine),
            tracker=tracker,
            me=Hello(config.node.name, database.incarnation),
            router=Router(config.local_domains, RouteTable(config.routes)),
        )
        self._core = core
        return core

    async def _own_queue(self, core: _Core, group: asyncio.TaskGroup) -> Upkeep | None:
        """As the file's one owner: recover what a dead run held, then keep the file."""
        if not self.role.owns_queue:
            return None
        poison = self.config.queue.poison_threshold
        await recover_queue(core.repository, core.tracker, self._owner, poison)
        return start_upkeep(core.database, core.repository, group)

    async def _start_delivery(
        self, core: _Core, group: asyncio.TaskGroup, stack: contextlib.AsyncExitStack
    ) -> _Delivery | None:
        if self.role.shard is None:
            return None
        shadow = self._shadow_client(core) if self.config.shadow.enabled else None
        smtp = self._smtp_courier(shadow)
        stack.push_async_callback(smtp.close)
        scheduler = self._scheduler(core, smtp)
        self._wake = scheduler.wake
        self._flush = scheduler.flush
        if self._local is not None:
            self._local.on_work = scheduler.wake
        group.create_task(scheduler.run(), name="delivery-scheduler")
        heartbeat = None
        if shadow is not None:
            await shadow.load()
            if self.role.peers:
                heartbeat = self._heartbeat(core, shadow, smtp)
                group.create_task(heartbeat.run(), name="heartbeat")
        return _Delivery(scheduler, heartbeat)

    async def _listen(self, core: _Core, stack: contextlib.AsyncExitStack) -> None:
        if not self.role.accept:
            return
        if self._local is not None:
            self._local.on_left = self._departures.left
        self._inbound = self._make_inbound(core)
        if self._credentials is not None:
            stack.callback(self._credentials.close)
        if self._copies is not None:
            stack.callback(self._copies.close)
        policy = self._relay_policy(core)
        config = self.config
        relay: Iterable[socket.socket | HostPort] = self._sockets or config.smtp.listen
        await self._serve(stack, self._relay, relay, policy)
        submission = config.submission
        if not submission.addresses:
            return
        if submission.allow_plaintext_auth:
            log.warning(
                "submission.allow_plaintext_auth is on: passwords may cross loopback in the"
                " clear (for tests only)"
            )
        starttls = self._submission_policy(core, starttls=config.tls is not None)
        where = self._submission_sockets or submission.listen
        await self._serve(stack, self._submission, where, starttls)
        implicit = self._submission_policy(core, starttls=False)
        where = self._tls_sockets or submission.tls_listen
        await self._serve(stack, self._submission_tls, where, implicit, implicit_tls=True)

    async def _serve(
        self,
        stack: contextlib.AsyncExitStack,
        kept: list[Listener],
        where: Iterable[socket.socket | HostPort],
        policy: ListenerPolicy,
        *,
        implicit_tls: bool = False,
    ) -> None:
        assert self._inbound is not None
        for place in where:
            listener = await start_listener(
                place,
                policy,
                self._inbound,
                backlog=self.config.smtp.listen_backlog,
                implicit_tls=implicit_tls,
            )
            stack.push_async_callback(listener.close)
            self.listeners.append(listener)
            kept.append(listener)

    def _start_pickup(self, core: _Core, group: asyncio.TaskGroup) -> Pickup | None:
        # One process per node scans the directories: the one that watches peers.
        if not (self.config.pickup.enabled and self.role.peers):
            return None
        self.pickup = self._pickup(core)
        group.create_task(self.pickup.run(), name="pickup")
        return self.pickup

    def _start_gauge(self, core: _Core, group: asyncio.TaskGroup) -> None:
        """Measure here what this process can see: everything in a node of one process; in
        an acceptor of several, only its own bytes in flight (the supervisor the rest)."""
        config = self.config
        probes: dict[str, Probe] = {}
        if self.role.owns_queue:
            probes.update(
                owner_probes(config.node.data_dir, core.database.path, lambda: [os.getpid()])
            )
        if self.role.accept:
            probes["inflight"] = on_loop(lambda: self.inflight)
        self._gauge = gauge_of(
            config.backpressure,
            probes,
            tracker=core.tracker,
            on_change=self._pressure_changed,
            inflight_share=self.role.acceptors,
        )
        if self._gauge is None:
            return
        group.create_task(self._gauge.run(), name="back-pressure")

    async def _drain(self, core: _Core, delivery: _Delivery | None, pickup: Pickup | None) -> None:
        if self._gauge is not None:
            self._gauge.stop()
        for listener in self.listeners:
            listener.server.close()
        if pickup is not None:
            await pickup.stop()
        if self._inbound is not None:
            await self._inbound.drain(self._grace)
        for listener in self.listeners:
            await listener.server.wait_closed()
        if delivery is not None:
            if delivery.heartbeat is not None:
                delivery.heartbeat.stop()
            await delivery.scheduler.stop(self._grace)
        await core.writer.stop()

    # -- the parts ----------------------------------------------------------------------

    def _make_inbound(self, core: _Core) -> Inbound:
        config = self.config
        intake = Intake(
            repository=core.repository,
            router=core.router,
            tracker=core.tracker,
            origin_prefix=core.me.origin_prefix,
            on_commit=self._signals.work,
        )
        if config.submission.addresses:
            self._credentials = Credentials(UsersFile(config.users_path))
        if config.shadow.before_ack != "off":
            self._copies = self._redundancy(core)
        executor = Executor(
            intake=intake,
            clock=self._clock,
            departures=self._departures,
            ledger=core.ledger,
            tracker=core.tracker,
            credentials=self._credentials,
            redundancy=self._copies,
        )
        spool = core.database.spool
        spool.prepare()
        return Inbound(
            executor,
            self._counters,
            self._clock,
            self._rng,
            spool=spool,
            spool_threshold=config.smtp.spool_threshold,
            pressure=self.pressure,
            tls=ServerTls(config.tls) if config.tls is not None else None,
        )

    def _redundancy(self, core: _Core) -> Redundancy:
        config = self.config
        shadow = self._shadow_client(core)
        # Only its connect(): peers are host:port, so no MX resolver and no pooled sends.
        smtp = self._smtp_courier(shadow, mx=False)

        async def connect(address: str) -> aiosmtplib.SMTP:
            return await smtp.connect(HostPort.parse(address))

        return Redundancy(
            peers=[str(peer) for peer in config.shadow.redundancy_peers],
            connect=connect,
            shadow=shadow,
            ledger=core.ledger,
            reader=core.repository,
            # Where the peer heartbeats this node: the relay listener as bound.
            relay_address=lambda: str(self.relay_addresses[0]),
            origin_prefix=core.me.origin_prefix,
            clock=self._clock,
            wake=lambda: self._signals.work(None),
        )

    def _relay_policy(self, core: _Core) -> ListenerPolicy:
        config = self.config
        smtp = config.smtp
        return ListenerPolicy(
            hostname=config.node.hostname,
            relay=self._relay_rule(core),
            limits=session_limits(smtp),
            shadow=ShadowOffer(core.me, config.shadow_peers) if config.shadow.enabled else None,
            max_ack_delay=smtp.max_ack_delay.total_seconds() if smtp.delayed_ack else None,
            starttls=config.tls is not None,
            before_ack=_before_ack(config.shadow),
        )

    def _relay_rule(self, core: _Core) -> RelayPolicy:
        config = self.config
        return RelayPolicy(
            router=core.router,
            trusted_networks=config.smtp.trusted_networks,
            catch_all=config.mailboxes.catch_all,
            known_recipients=frozenset(config.mailboxes.recipients),
            postmaster_domain=config.local_domains[0] if config.local_domains else None,
        )

    def _submission_policy(self, core: _Core, *, starttls: bool) -> ListenerPolicy:
        """A submission listener's: AUTH, no XSHADOW, [submission]'s own limits."""
        config = self.config
        smtp = config.submission_smtp
        submission = config.submission
        return ListenerPolicy(
            hostname=config.node.hostname,
            relay=self._relay_rule(core),
            limits=session_limits(smtp),
            max_ack_delay=smtp.max_ack_delay.total_seconds() if smtp.delayed_ack else None,
            starttls=starttls,
            before_ack=_before_ack(config.shadow),
            submission=SubmissionOffer(
                plaintext_auth=submission.allow_plaintext_auth,
                failure_delay=submission.auth_failure_delay.total_seconds(),
                max_failures=submission.max_auth_failures_per_client,
                failure_window=submission.auth_failure_window.total_seconds(),
                max_messages_per_minute_per_user=submission.max_messages_per_minute_per_user,
            ),
        )

    def _pickup(self, core: _Core) -> Pickup:
        config = self.config
        data_dir = config.node.data_dir
        return Pickup(
            directories={Source.PICKUP: data_dir / "pickup", Source.REPLAY: data_dir / "replay"},
            repository=core.repository,
            router=core.router,
            tracker=core.tracker,
            origin_prefix=core.me.origin_prefix,
            hostname=config.node.hostname,
            limits=PickupLimits(
                max_message_size=config.smtp.max_message_size,
                max_line_length=config.smtp.max_line_length,
                max_recipients=config.smtp.max_recipients,
                max_received_headers=config.smtp.max_received_headers,
            ),
            interval=config.pickup.interval.total_seconds(),
            rate=config.pickup.rate,
            on_commit=self._signals.work,
            clock=self._clock,
        )

    def _shadow_client(self, core: _Core) -> ShadowClient:
        return ShadowClient(
            me=core.me,
            ledger=core.ledger,
            tracker=core.tracker,
            clock=self._clock,
            wake=lambda: self._signals.work(None),
        )

    def _smtp_courier(self, shadow: ShadowClient | None, *, mx: bool = True) -> SmtpCourier:
        config = self.config
        resolver = (
            MxResolver(
                nameservers=config.dns.nameservers,
                ipv6=config.dns.ipv6,
                lifetime=config.dns.timeout.total_seconds(),
                port=config.delivery.mx_port,
                rng=self._rng,
            )
            if mx
            else None
        )
        return SmtpCourier(
            SmtpSettings(
                local_hostname=config.node.hostname,
                source_host=_source_host(config.smtp.listen),
                tls=config.delivery.tls,
                tls_ca=config.delivery.tls_ca,
                connect_timeout=config.delivery.connect_timeout.total_seconds(),
                command_timeout=config.delivery.command_timeout.total_seconds(),
            ),
            resolver,
            shadow=shadow,
        )

    def _scheduler(self, core: _Core, smtp: SmtpCourier) -> Scheduler:
        config = self.config
        assert self.role.shard is not None
        return Scheduler(
            repository=core.repository,
            router=core.router,
            couriers={
                HopKind.LOCAL: MaildirCourier(config.mailbox_dir, config.node.hostname),
                HopKind.ROUTE: smtp,
                HopKind.MX: smtp,
                HopKind.REDIRECT: smtp,
            },
            policy=RetryPolicy(
                intervals=[d.total_seconds() for d in config.queue.retry],
                expiry=config.queue.expiry.total_seconds(),
            ),
            notifier=notifier_for(
                config, core.router, core.database.incarnation, self._rng, core.tracker
            ),
            tracker=core.tracker,
            clock=self._clock,
            owner=self._owner,
            shard=self.role.shard,
            concurrency_per_hop=config.delivery.concurrency_per_hop,
            signals=self._signals,
        )

    def _heartbeat(self, core: _Core, shadow: ShadowClient, smtp: SmtpCourier) -> Heartbeat:
        config = self.config

        async def connect(address: str) -> aiosmtplib.SMTP:
            return await smtp.connect(HostPort.parse(address))

        return Heartbeat(
            ledger=core.ledger,
            shadow=shadow,
            connect=connect,
            tracker=core.tracker,
            clock=self._clock,
            interval=config.shadow.heartbeat_interval.total_seconds(),
            failures=config.shadow.heartbeat_failures,
            auto_discard=config.shadow.auto_discard.total_seconds(),
            dedup_window=config.shadow.dedup_window.total_seconds(),
        )
