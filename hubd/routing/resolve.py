"""Categorising a recipient domain: local mailbox, static route, or MX.

Owns: the choice of next hop for a domain from configuration alone (no DNS here).
Public: Router, NextHop, HopKind.
Limits: MX next hops are named by domain; their hosts are found at delivery time.
See also: hubd/routing/routes.py, hubd/delivery/scheduler.py.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from hubd.config import HostPort
from hubd.routing.routes import RouteTable


class HopKind(enum.StrEnum):
    LOCAL = "local"
    ROUTE = "route"
    MX = "mx"


@dataclass(frozen=True, slots=True)
class NextHop:
    """Where a recipient goes next; `key` names its delivery queue."""

    kind: HopKind
    name: str
    hosts: tuple[HostPort, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.name}"


class Router:
    """Maps recipient domains to next hops."""

    def __init__(self, local_domains: Iterable[str], routes: RouteTable) -> None:
        self._local = frozenset(d.lower() for d in local_domains)
        self._routes = routes

    def is_local(self, domain: str) -> bool:
        return domain.lower() in self._local

    def next_hop(self, domain: str) -> NextHop:
        """The next hop for a recipient domain."""
        domain = domain.lower().rstrip(".")
        if domain in self._local:
            return NextHop(HopKind.LOCAL, domain)
        route = self._routes.match(domain)
        if route is not None:
            return NextHop(HopKind.ROUTE, route.pattern, route.hosts)
        return NextHop(HopKind.MX, domain)
