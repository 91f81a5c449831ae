"""Categorising a recipient domain: local mailbox, static route, or MX (or an operator's
redirect of a queued recipient).

Owns: the choice of next hop for a domain from configuration alone (no DNS here).
Public: Router, NextHop, HopKind, redirect_hop(), hop_of().
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
    REDIRECT = "redirect"  # an operator's `hubd queue redirect --to HOST:PORT`, over routing


@dataclass(frozen=True, slots=True)
class NextHop:
    """Where a recipient goes next; `key` names its delivery queue."""

    kind: HopKind
    name: str
    hosts: tuple[HostPort, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.name}"


def redirect_hop(target: str) -> NextHop:
    """The next hop of a recipient an operator redirected to `target` (host:port)."""
    address = HostPort.parse(target)
    return NextHop(HopKind.REDIRECT, str(address), (address,))


def hop_of(router: Router, address: str, redirect_to: str | None) -> NextHop:
    """Where a queued recipient goes now: its operator's redirect, else its domain's route."""
    if redirect_to is not None:
        return redirect_hop(redirect_to)
    return router.next_hop(address.rpartition("@")[2])


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
