"""The storage-free sink (`hubd bench-sink`): hubd's own listener and session, storing nothing.

Owns: serving SMTP with hubd's SMTP code and an intake that forgets each message, so that
`hubd bench --ceiling` measures what the SMTP layer alone can take.
Public: serve_sink().
Failures: OSError when the address cannot be bound.
See also: hubd/smtp/server.py, hubd/bench/run.py (the ceiling mode).
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Callable

from hubd.bench.settings import DOMAIN
from hubd.config import Config, HostPort
from hubd.routing import Router, RouteTable
from hubd.smtp.executor import Executor
from hubd.smtp.limits import LocalCounters, session_limits
from hubd.smtp.message import ReceivedMessage
from hubd.smtp.policy import ListenerPolicy
from hubd.smtp.relay import RelayPolicy
from hubd.smtp.server import Inbound, start_listener


async def _discard(message: ReceivedMessage) -> None:
    """The sink's intake: the message is accepted and forgotten."""


async def serve_sink(listen: HostPort, on_ready: Callable[[HostPort], None]) -> None:
    """Serve SMTP with hubd's listener and session, storing nothing, until SIGTERM or SIGINT."""
    config = Config.model_validate({"local_domains": [DOMAIN], "smtp": {"listen": [str(listen)]}})
    smtp = config.smtp
    policy = ListenerPolicy(
        hostname="sink.hubd.test",
        relay=RelayPolicy(
            router=Router(config.local_domains, RouteTable(config.routes)),
            trusted_networks=smtp.trusted_networks,
            catch_all=True,
            known_recipients=frozenset(),
        ),
        limits=session_limits(smtp),
    )
    inbound = Inbound(
        Executor(intake=_discard, clock=time.time), LocalCounters(), time.time, random.Random()
    )
    listener = await start_listener(listen, policy, inbound, backlog=smtp.listen_backlog)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    on_ready(listener.address)
    await stop.wait()
    listener.server.close()
    await inbound.drain(5.0)
    await listener.server.wait_closed()
