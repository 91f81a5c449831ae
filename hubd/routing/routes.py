"""Static routes: domain patterns to ordered lists of next hops.

Owns: matching a domain against `[[routes]]` ("x" is exact, ".x" every subdomain of x).
Public: RouteTable, Route.
Limits: the most specific pattern wins: an exact domain, then the longest ".suffix".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hubd.config import HostPort, RouteConfig


@dataclass(frozen=True, slots=True)
class Route:
    """One matched route: the pattern that matched and its hosts, in order."""

    pattern: str
    hosts: tuple[HostPort, ...]


class RouteTable:
    """The static routes of a node, indexed for lookup by domain."""

    def __init__(self, routes: Sequence[RouteConfig]) -> None:
        self._exact: dict[str, Route] = {}
        self._suffix: dict[str, Route] = {}
        for route in routes:
            hosts = tuple(route.next_hops)
            for pattern in route.domains:
                table = self._suffix if pattern.startswith(".") else self._exact
                table.setdefault(pattern, Route(pattern, hosts))

    def match(self, domain: str) -> Route | None:
        """The route for `domain`, or None when no pattern covers it."""
        domain = domain.lower().rstrip(".")
        exact = self._exact.get(domain)
        if exact is not None:
            return exact
        labels = domain.split(".")
        # Longest suffix first: "a.b.example.org" tries ".b.example.org", then ".example.org".
        for start in range(1, len(labels)):
            route = self._suffix.get("." + ".".join(labels[start:]))
            if route is not None:
                return route
        return None
