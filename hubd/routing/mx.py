"""MX resolution through dnspython, with hubd's three IPv6 modes.

Owns: turning a recipient domain into an ordered list of addresses to try (RFC 5321 5.1:
MX by preference, equal preferences shuffled, implicit MX when there is none; RFC 7505 null
MX), and the IPv6 modes: "off" asks for A only; "fallback" asks AAAA and A and uses A when
AAAA fails; "strict" defers with Exchange 2007's `451 4.4.0 DNS query failed` when AAAA
fails, even though MX and A resolve.
Public: MxResolver, Lookup, LookupStatus, order_exchanges(), addresses_for().
Failures: none raised; a failed resolution is a Reply (transient 451, or permanent 550/556).
Limits: A and AAAA are queried separately (never resolve_name(), which gives up when AAAA
fails); no CNAME handling beyond dnspython's own; no DNSSEC or DANE.
See also: hubd/dns_server.py (the test and cluster DNS server), LIBNOTES.md section 3.
"""

from __future__ import annotations

import asyncio
import enum
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.resolver

from hubd import replies
from hubd.config import HostPort
from hubd.metrics import count_dns_failure
from hubd.replies import Reply

Ipv6Mode = Literal["off", "fallback", "strict"]


class LookupStatus(enum.Enum):
    OK = "ok"
    NODATA = "nodata"  # the name exists, without records of this type
    NXDOMAIN = "nxdomain"
    FAILED = "failed"  # SERVFAIL, REFUSED, timeout: try again later


@dataclass(frozen=True, slots=True)
class Lookup:
    status: LookupStatus
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Exchange:
    preference: int
    host: str  # without the trailing dot; "" is the root (null MX)


def order_exchanges(records: Sequence[Exchange], rng: random.Random) -> list[str]:
    """MX hosts by preference, equal preferences in random order (RFC 5321 5.1)."""
    shuffled = list(records)
    rng.shuffle(shuffled)
    seen: dict[str, None] = {}
    for record in sorted(shuffled, key=lambda r: r.preference):  # stable: keeps the shuffle
        seen.setdefault(record.host, None)
    return list(seen)


def is_null_mx(records: Sequence[Exchange]) -> bool:
    """RFC 7505: a single MX with preference 0 and the root as exchange."""
    return any(r.host == "" for r in records)


def addresses_for(mode: Ipv6Mode, a: Lookup, aaaa: Lookup | None) -> list[str] | Reply:
    """The addresses of one MX host, IPv6 first, or the reply that defers or fails it."""
    if mode == "strict" and aaaa is not None and aaaa.status is LookupStatus.FAILED:
        return replies.DNS_QUERY_FAILED
    v6 = list(aaaa.values) if aaaa is not None and aaaa.status is LookupStatus.OK else []
    v4 = list(a.values) if a.status is LookupStatus.OK else []
    if v6 or v4:
        return v6 + v4
    if a.status is LookupStatus.FAILED:
        return replies.DNS_SERVER_FAILURE
    return []


class MxResolver:
    """Resolves recipient domains to delivery addresses on `port`."""

    def __init__(
        self,
        *,
        nameservers: Sequence[HostPort],
        ipv6: Ipv6Mode,
        lifetime: float,
        port: int,
        rng: random.Random,
    ) -> None:
        resolver = dns.asyncresolver.Resolver(configure=not nameservers)
        if nameservers:
            resolver.nameservers = [
                dns.nameserver.Do53Nameserver(ns.host, ns.port) for ns in nameservers
            ]
        resolver.lifetime = lifetime
        resolver.timeout = min(lifetime, 2.0)
        self._resolver = resolver
        self._ipv6 = ipv6
        self._port = port
        self._rng = rng

    async def _lookup(self, name: str, rdtype: str) -> Lookup:
        try:
            answer = await self._resolver.resolve(name, rdtype, search=False)
        except dns.resolver.NXDOMAIN:
            count_dns_failure("nxdomain", rdtype)
            return Lookup(LookupStatus.NXDOMAIN)
        except dns.resolver.NoAnswer:
            return Lookup(LookupStatus.NODATA)
        except dns.exception.Timeout:
            count_dns_failure("timeout", rdtype)
            return Lookup(LookupStatus.FAILED)
        except dns.resolver.NoNameservers:  # every server answered SERVFAIL or REFUSED
            count_dns_failure("servfail", rdtype)
            return Lookup(LookupStatus.FAILED)
        except dns.exception.DNSException:
            count_dns_failure("error", rdtype)
            return Lookup(LookupStatus.FAILED)
        if rdtype == "MX":
            values = tuple(
                f"{rr.preference} {rr.exchange.to_text(omit_final_dot=True)}" for rr in answer
            )
        else:
            values = tuple(rr.address for rr in answer)
        return Lookup(LookupStatus.OK, values)

    async def _exchanges(self, domain: str) -> list[str] | Reply:
        mx = await self._lookup(domain, "MX")
        if mx.status is LookupStatus.NXDOMAIN:
            return replies.NO_SUCH_DOMAIN
        if mx.status is LookupStatus.FAILED:
            return replies.DNS_SERVER_FAILURE
        if mx.status is LookupStatus.NODATA:
            return [domain]  # implicit MX (RFC 5321 5.1)
        records = []
        for value in mx.values:
            preference, _, host = value.partition(" ")
            records.append(Exchange(int(preference), "" if host in ("", "@", ".") else host))
        if is_null_mx(records):
            return replies.NULL_MX
        return order_exchanges(records, self._rng)

    async def _host_addresses(self, host: str) -> list[str] | Reply:
        if self._ipv6 == "off":
            return addresses_for("off", await self._lookup(host, "A"), None)
        aaaa, a = await asyncio.gather(self._lookup(host, "AAAA"), self._lookup(host, "A"))
        return addresses_for(self._ipv6, a, aaaa)

    async def targets(self, domain: str) -> list[HostPort] | Reply:
        """Addresses to try for `domain`, in order, or the reply for every recipient."""
        exchanges = await self._exchanges(domain)
        if isinstance(exchanges, Reply):
            return exchanges
        found: dict[str, None] = {}
        transient: Reply | None = None
        for host in exchanges:
            result = await self._host_addresses(host)
            if result is replies.DNS_QUERY_FAILED:
                return result  # strict mode: Exchange 2007 failed the whole lookup
            if isinstance(result, Reply):
                transient = result
                continue
            for address in result:
                found.setdefault(address, None)
        if found:
            return [HostPort(host=address, port=self._port) for address in found]
        return transient or replies.NO_MX_ADDRESS
