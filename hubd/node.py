"""One running hubd node: storage, intake, delivery and listeners, started and stopped in order.

Owns: the order of start-up (open the queue, release leases of a dead run, start the writer,
the scheduler, the shadow heartbeat, then the listeners) and of shutdown (stop accepting, let
commits in flight answer, finish deliveries in flight, commit, close the database).
Public: Node.
Failures: StorageError (SchemaTooNew, QueueCorrupt) at start; OSError when a port is taken.
See also: hubd/cli.py (`hubd serve`), DESIGN.md (the life of a message).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import random
import secrets
import signal
import time
from collections.abc import Callable

import aiosmtplib

from hubd.config import Config, HostPort
from hubd.delivery.maildir import MaildirCourier
from hubd.delivery.notices import Notifier
from hubd.delivery.retry import RetryPolicy
from hubd.delivery.scheduler import Scheduler
from hubd.delivery.smtp_client import SmtpCourier, SmtpSettings
from hubd.intake import Intake
from hubd.routing import HopKind, Router, RouteTable
from hubd.routing.mx import MxResolver
from hubd.shadow.client import ShadowClient
from hubd.shadow.delayed_ack import Departures
from hubd.shadow.heartbeat import Heartbeat
from hubd.shadow.protocol import Hello
from hubd.smtp.handler import DelayedAck, InboundHandler, InboundLimits
from hubd.smtp.relay import RelayPolicy
from hubd.smtp.server import Listener, SessionRegistry, start_listener
from hubd.smtp.xshadow import ShadowServer
from hubd.tracking import Tracker, TrackingEvent
from storage import Database, Repository, ShadowLedger, Writer, open_database

log = logging.getLogger(__name__)


def _source_host(listen: list[HostPort]) -> str | None:
    # Bind outbound connections to the node's own address, so peers on loopback can tell
    # nodes apart; a wildcard listener leaves the choice to the kernel.
    if not listen:
        return None
    try:
        address = ipaddress.ip_address(listen[0].host)
    except ValueError:
        return None
    return None if address.is_unspecified else str(address)


class Node:
    """A hubd node inside the current event loop."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._rng = rng or random.Random()
        self.listeners: list[Listener] = []
        self.database: Database | None = None
        self.repository: Repository | None = None
        self._writer: Writer | None = None
        self._scheduler: Scheduler | None = None
        self._smtp: SmtpCourier | None = None
        self._heartbeat: Heartbeat | None = None
        self.ledger: ShadowLedger | None = None
        self._tracker: Tracker | None = None
        self._registry = SessionRegistry(config.smtp.max_sessions)
        self._stopped = False

    @property
    def _origin_prefix(self) -> str:
        assert self.database is not None
        return f"{self.config.node.name}.{self.database.incarnation}"

    @property
    def relay_addresses(self) -> list[HostPort]:
        """The addresses the relay listeners really bound (ports resolved when 0)."""
        return [listener.address for listener in self.listeners]

    async def start(self) -> None:
        """Open the queue, resume its work, and start accepting mail."""
        config = self.config
        data_dir = config.node.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.database = await open_database(data_dir / "queue.db", now=self._clock)
        self._writer = Writer(self.database.write_engine)
        self._writer.start()
        self.repository = Repository(self.database, self._writer)
        self.ledger = ShadowLedger(self._writer, self.database.read_engine)
        owner = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._tracker = Tracker(data_dir / "tracking", config.node.name, self._clock)
        await self._recover(owner)
        me = Hello(config.node.name, self.database.incarnation)
        router = Router(config.local_domains, RouteTable(config.routes))
        departures = Departures() if config.smtp.delayed_ack else None
        shadow = self._make_shadow_client(me) if config.shadow.enabled else None
        self._scheduler = self._make_scheduler(router, owner, shadow, departures)
        self._scheduler.start()
        if shadow is not None:
            await shadow.load()
            self._heartbeat = self._make_heartbeat(shadow)
            self._heartbeat.start()
        handler = self._make_handler(router, me, departures)
        for address in config.smtp.listen:
            self.listeners.append(
                await start_listener(
                    address,
                    handler,
                    self._registry,
                    hostname=config.node.hostname,
                    max_message_size=config.smtp.max_message_size,
                    max_line_length=config.smtp.max_line_length,
                    idle_timeout=config.smtp.idle_timeout.total_seconds(),
                )
            )

    def _make_handler(
        self, router: Router, me: Hello, departures: Departures | None
    ) -> InboundHandler:
        config = self.config
        assert self.repository is not None
        assert self.ledger is not None
        assert self._tracker is not None
        assert self._scheduler is not None
        intake = Intake(
            repository=self.repository,
            router=router,
            tracker=self._tracker,
            origin_prefix=self._origin_prefix,
            on_commit=self._scheduler.wake,
        )
        shadow_server = None
        if config.shadow.enabled:
            shadow_server = ShadowServer(
                me=me,
                peers=config.shadow_peers,
                ledger=self.ledger,
                tracker=self._tracker,
                clock=self._clock,
            )
        return InboundHandler(
            hostname=config.node.hostname,
            policy=RelayPolicy(
                router=router,
                trusted_networks=config.smtp.trusted_networks,
                catch_all=config.mailboxes.catch_all,
                known_recipients=frozenset(config.mailboxes.recipients),
            ),
            limits=InboundLimits(config.smtp.max_recipients, config.smtp.max_received_headers),
            intake=intake,
            clock=self._clock,
            rng=self._rng,
            shadow=shadow_server,
            delayed_ack=(
                DelayedAck(departures, config.smtp.max_ack_delay.total_seconds())
                if departures is not None
                else None
            ),
        )

    def _make_shadow_client(self, me: Hello) -> ShadowClient:
        assert self.ledger is not None
        assert self._tracker is not None
        return ShadowClient(
            me=me,
            ledger=self.ledger,
            tracker=self._tracker,
            clock=self._clock,
            wake=lambda: self._scheduler.wake() if self._scheduler is not None else None,
        )

    def _make_heartbeat(self, shadow: ShadowClient) -> Heartbeat:
        config = self.config
        assert self.ledger is not None
        assert self._tracker is not None
        assert self._smtp is not None
        smtp = self._smtp

        async def connect(address: str) -> aiosmtplib.SMTP:
            return await smtp.connect(HostPort.parse(address))

        return Heartbeat(
            ledger=self.ledger,
            shadow=shadow,
            connect=connect,
            tracker=self._tracker,
            clock=self._clock,
            interval=config.shadow.heartbeat_interval.total_seconds(),
            failures=config.shadow.heartbeat_failures,
            auto_discard=config.shadow.auto_discard.total_seconds(),
            dedup_window=config.shadow.dedup_window.total_seconds(),
        )

    async def _recover(self, owner: str) -> None:
        assert self.repository is not None
        assert self._tracker is not None
        recovery = await self.repository.recover(owner, self.config.queue.poison_threshold)
        if recovery.released:
            log.warning("resuming %d recipients a previous run was delivering", recovery.released)
        for queue_id in recovery.poisoned:
            log.error("message %s was being delivered in repeated crashes; held", queue_id)
            (message,) = await self.repository.list_messages(queue_id)
            self._tracker.record(
                TrackingEvent.POISON,
                queue_id=queue_id,
                sender=message.sender,
                recipients=[r.address for r in message.recipients],
                message_id=message.message_id,
                crashes=message.crashes,
            )

    def _make_scheduler(
        self,
        router: Router,
        owner: str,
        shadow: ShadowClient | None,
        departures: Departures | None,
    ) -> Scheduler:
        config = self.config
        assert self.repository is not None
        assert self._tracker is not None
        smtp = self._smtp = SmtpCourier(
            SmtpSettings(
                local_hostname=config.node.hostname,
                source_host=_source_host(config.smtp.listen),
                tls=config.delivery.tls,
                tls_ca=config.delivery.tls_ca,
                connect_timeout=config.delivery.connect_timeout.total_seconds(),
                command_timeout=config.delivery.command_timeout.total_seconds(),
            ),
            MxResolver(
                nameservers=config.dns.nameservers,
                ipv6=config.dns.ipv6,
                lifetime=config.dns.timeout.total_seconds(),
                port=config.delivery.mx_port,
                rng=self._rng,
            ),
            shadow=shadow,
        )
        return Scheduler(
            repository=self.repository,
            router=router,
            couriers={
                HopKind.LOCAL: MaildirCourier(config.mailbox_dir, config.node.hostname),
                HopKind.ROUTE: smtp,
                HopKind.MX: smtp,
            },
            policy=RetryPolicy(
                intervals=[d.total_seconds() for d in config.queue.retry],
                expiry=config.queue.expiry.total_seconds(),
            ),
            notifier=Notifier(
                hostname=config.node.hostname,
                router=router,
                origin_prefix=self._origin_prefix,
                delay_notice=config.queue.delay_notice.total_seconds(),
                expiry=config.queue.expiry.total_seconds(),
                rng=self._rng,
            ),
            tracker=self._tracker,
            clock=self._clock,
            owner=owner,
            concurrency_per_hop=config.delivery.concurrency_per_hop,
            departures=departures,
        )

    async def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, drain sessions and deliveries (bounded), close the queue."""
        if self._stopped:
            return
        self._stopped = True
        for listener in self.listeners:
            listener.server.close()
        await self._registry.drain(grace)
        for listener in self.listeners:
            await listener.server.wait_closed()
        self.listeners.clear()
        if self._heartbeat is not None:
            await self._heartbeat.stop()
        if self._scheduler is not None:
            await self._scheduler.stop(grace)
        if self._smtp is not None:
            await self._smtp.close()
        if self._writer is not None:
            await self._writer.stop()
        if self._tracker is not None:
            self._tracker.close()
        if self.database is not None:
            await self.database.close()

    async def run_until_signalled(self, on_ready: Callable[[Node], None] | None = None) -> None:
        """Start, serve until SIGTERM or SIGINT, then stop cleanly."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await self.start()
        if on_ready is not None:
            on_ready(self)
        await stop.wait()
        log.info("stopping")
        await self.stop()
