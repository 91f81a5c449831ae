"""Static routes and the choice of next hop from configuration alone."""

from __future__ import annotations

import pytest

from hubd.config import HostPort, RouteConfig
from hubd.routing import HopKind, NextHop, Router, RouteTable, hop_of, redirect_hop


def route(domains: list[str], *hops: str) -> RouteConfig:
    return RouteConfig.model_validate({"domains": domains, "next_hops": list(hops)})


TABLE = RouteTable(
    [
        route([".example.org"], "10.0.0.1:25"),
        route(["mail.example.org"], "10.0.0.2:25"),
        route([".b.example.org"], "10.0.0.3:25"),
        route([".c.b.example.org", "partner.test"], "10.0.0.4:25", "[2001:db8::4]:2525"),
    ]
)


class TestRouteTable:
    @pytest.mark.parametrize(
        ("domain", "pattern"),
        [
            ("mail.example.org", "mail.example.org"),
            ("x.example.org", ".example.org"),
            ("x.mail.example.org", ".example.org"),
            ("a.b.example.org", ".b.example.org"),
            ("x.y.b.example.org", ".b.example.org"),
            ("d.c.b.example.org", ".c.b.example.org"),
            ("c.b.example.org", ".b.example.org"),
            ("b.example.org", ".example.org"),
            ("partner.test", "partner.test"),
            ("MAIL.Example.ORG", "mail.example.org"),
            ("x.example.org.", ".example.org"),
            ("example.org", None),
            ("notexample.org", None),
            ("sub.partner.test", None),
            ("elsewhere.test", None),
            ("", None),
        ],
        ids=[
            "exact",
            "suffix",
            "exact-does-not-cover-subdomains",
            "longer-suffix-wins",
            "longer-suffix-deeper",
            "longest-suffix-wins",
            "suffix-is-not-its-own-apex",
            "suffix-apex-falls-to-shorter",
            "exact-in-multi-domain-route",
            "case-insensitive",
            "trailing-dot",
            "suffix-does-not-match-apex",
            "label-boundary",
            "exact-is-not-a-suffix",
            "no-route",
            "empty",
        ],
    )
    def test_match(self, domain: str, pattern: str | None) -> None:
        """An exact domain beats any suffix; among suffixes the longest wins."""
        matched = TABLE.match(domain)
        assert (matched.pattern if matched else None) == pattern

    def test_exact_beats_suffix_in_any_order(self) -> None:
        """Exact wins over a suffix that covers it whichever comes first in the file."""
        for routes in (
            [route([".example.org"], "10.0.0.1:25"), route(["x.example.org"], "10.0.0.2:25")],
            [route(["x.example.org"], "10.0.0.2:25"), route([".example.org"], "10.0.0.1:25")],
        ):
            matched = RouteTable(routes).match("x.example.org")
            assert matched is not None
            assert matched.hosts == (HostPort(host="10.0.0.2", port=25),)

    def test_first_duplicate_wins(self) -> None:
        """A pattern listed twice keeps its first route."""
        table = RouteTable([route(["a.test"], "10.0.0.1:25"), route(["a.test"], "10.0.0.2:25")])
        matched = table.match("a.test")
        assert matched is not None
        assert matched.hosts == (HostPort(host="10.0.0.1", port=25),)

    def test_hosts_keep_their_order(self) -> None:
        """A route's next hops come back in configured order, IPv6 included."""
        matched = TABLE.match("partner.test")
        assert matched is not None
        assert matched.hosts == (
            HostPort(host="10.0.0.4", port=25),
            HostPort(host="2001:db8::4", port=2525),
        )

    def test_empty_table(self) -> None:
        """With no routes nothing matches."""
        assert RouteTable([]).match("example.org") is None


ROUTER = Router(["corp.test", "Other.Test"], RouteTable([route([".corp.test"], "10.0.0.9:25")]))


class TestRouter:
    @pytest.mark.parametrize(
        ("domain", "expected"),
        [
            ("corp.test", NextHop(HopKind.LOCAL, "corp.test")),
            ("CORP.test.", NextHop(HopKind.LOCAL, "corp.test")),
            ("other.test", NextHop(HopKind.LOCAL, "other.test")),
            (
                "eu.corp.test",
                NextHop(HopKind.ROUTE, ".corp.test", (HostPort(host="10.0.0.9", port=25),)),
            ),
            ("elsewhere.test", NextHop(HopKind.MX, "elsewhere.test")),
            ("Elsewhere.TEST.", NextHop(HopKind.MX, "elsewhere.test")),
        ],
        ids=["local", "local-any-case", "local-configured-in-caps", "route", "mx", "mx-normalised"],
    )
    def test_next_hop(self, domain: str, expected: NextHop) -> None:
        """Local domains first, then static routes; anything else goes by MX."""
        assert ROUTER.next_hop(domain) == expected

    @pytest.mark.parametrize(
        ("hop", "key"),
        [
            (NextHop(HopKind.LOCAL, "corp.test"), "local:corp.test"),
            (NextHop(HopKind.ROUTE, ".corp.test"), "route:.corp.test"),
            (NextHop(HopKind.MX, "elsewhere.test"), "mx:elsewhere.test"),
        ],
        ids=["local", "route", "mx"],
    )
    def test_key(self, hop: NextHop, key: str) -> None:
        """A next hop's queue key is its kind and name."""
        assert hop.key == key

    def test_is_local(self) -> None:
        """is_local ignores case but not subdomains."""
        assert ROUTER.is_local("CORP.TEST")
        assert not ROUTER.is_local("eu.corp.test")


class TestRedirect:
    def test_an_operators_redirect_wins_over_the_route(self) -> None:
        """A redirected recipient goes to its target whatever its domain's route; one not
        redirected goes where routing says; the target is written one way (IPv6 bracketed)."""
        router = Router(["corp.test"], TABLE)
        hop = hop_of(router, "bob@corp.test", "[::1]:2526")
        assert hop == NextHop(HopKind.REDIRECT, "[::1]:2526", (HostPort(host="::1", port=2526),))
        assert hop.key == "redirect:[::1]:2526"
        assert hop_of(router, "bob@corp.test", None) == NextHop(HopKind.LOCAL, "corp.test")
        assert redirect_hop("127.0.0.1:25").hosts == (HostPort(host="127.0.0.1", port=25),)
        with pytest.raises(ValueError, match="host:port"):
            redirect_hop("nowhere")
