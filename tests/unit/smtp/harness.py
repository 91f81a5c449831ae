"""A session under test: a relay listener's policy, counters and a frozen clock, no sockets."""

from __future__ import annotations

import dataclasses
import ipaddress
import random
from collections.abc import Callable
from typing import Any

from hubd.backpressure import Level
from hubd.config import RouteConfig
from hubd.routing import Router, RouteTable
from hubd.shadow.protocol import Hello
from hubd.smtp.data import ContentLimits
from hubd.smtp.limits import LocalCounters, SessionLimits
from hubd.smtp.policy import BeforeAck, ListenerPolicy, ShadowOffer
from hubd.smtp.relay import RelayPolicy
from hubd.smtp.session import Session

PEER_IP = "10.0.0.7"  # trusted and a shadow peer
OUTSIDER_IP = "192.0.2.9"  # neither
ME = Hello("hub-d", "5b1e0c7a9d2f4e33")
UPSTREAM = Hello("up-1", "0123456789abcdef")

LIMITS = SessionLimits(
    content=ContentLimits(
        max_message_size=10_000,
        max_line_length=1001,
        max_header_size=2000,
        max_received_headers=5,
    ),
    max_recipients=3,
    max_commands=100,
    max_errors=5,
    max_sessions=4,
    max_connections_per_client=2,
    max_messages_per_minute=3,
    idle_timeout=300.0,
    data_timeout=600.0,
)


def listener_policy(
    *, max_ack_delay: float | None = None, before_ack: BeforeAck | None = None, **limits: Any
) -> ListenerPolicy:
    """A relay listener for corp.test, routing partner.test, trusting and peering 10/8."""
    router = Router(
        ["corp.test"],
        RouteTable(
            [
                RouteConfig.model_validate(
                    {"domains": ["partner.test"], "next_hops": ["10.9.9.9:25"]}
                )
            ]
        ),
    )
    networks = [ipaddress.ip_network("10.0.0.0/8")]
    return ListenerPolicy(
        hostname="hub-d.hubd.test",
        relay=RelayPolicy(
            router=router, trusted_networks=networks, catch_all=True, known_recipients=frozenset()
        ),
        limits=dataclasses.replace(LIMITS, **limits),
        shadow=ShadowOffer(ME, networks),
        max_ack_delay=max_ack_delay,
        before_ack=before_ack,
    )


class Clock:
    """Time that moves only when the test says so."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def new_session(
    policy: ListenerPolicy | None = None,
    *,
    client_ip: str = OUTSIDER_IP,
    counters: LocalCounters | None = None,
    clock: Clock | None = None,
    pressure: Callable[[], Level] = lambda: Level.NORMAL,
) -> Session:
    """A session not yet opened."""
    return Session(
        policy or listener_policy(),
        client_ip=client_ip,
        counters=counters if counters is not None else LocalCounters(),
        clock=clock or Clock(),
        rng=random.Random(7),
        pressure=pressure,
    )
