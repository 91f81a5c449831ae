"""A small authoritative DNS server for tests and local clusters, with fault injection.

Owns: answering MX, A, AAAA (any type in the zone) over UDP and TCP on a loopback address
from zone-file text, NXDOMAIN for unknown names, NODATA for known names without the type,
and faults per name and type (SERVFAIL, REFUSED, or no answer at all); a log of queries.
Public: DnsServer, Fault.
Limits: no wildcards, no CNAME chasing, no delegation; answers are authoritative for every
name it holds. It runs in its own threads (dnslib), so it serves an event loop in-process.
See also: LIBNOTES.md section 4 (why dnslib: dnsmasq cannot fail AAAA alone).
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass
from typing import Any

from dnslib import QTYPE, RCODE, RR, DNSError
from dnslib.server import BaseResolver, DNSLogger, DNSServer


class Fault(enum.StrEnum):
    SERVFAIL = "servfail"
    REFUSED = "refused"
    DROP = "drop"  # no reply: the client times out


@dataclass(frozen=True, slots=True)
class Query:
    name: str  # lower-case, with the trailing dot
    qtype: str  # "A", "AAAA", "MX", ...


class _DropQuery(DNSError):  # type: ignore[misc]
    """Raised inside the resolver: dnslib's handler catches DNSError and sends no reply."""


def _key(name: str) -> str:
    return name.lower().rstrip(".") + "."


class _ZoneResolver(BaseResolver):  # type: ignore[misc]
    def __init__(self, zone: str) -> None:
        self._lock = threading.Lock()
        self._records: list[Any] = []
        self._faults: dict[tuple[str, str], Fault] = {}
        self.queries: list[Query] = []
        self.load(zone)

    def load(self, zone: str) -> None:
        records = RR.fromZone(zone) if zone.strip() else []
        with self._lock:
            self._records = records

    def set_fault(self, name: str, qtype: str, fault: Fault | None) -> None:
        with self._lock:
            if fault is None:
                self._faults.pop((_key(name), qtype.upper()), None)
            else:
                self._faults[(_key(name), qtype.upper())] = fault

    def resolve(self, request: Any, handler: Any) -> Any:
        name = _key(str(request.q.qname))
        qtype = QTYPE.get(request.q.qtype)
        reply = request.reply()
        with self._lock:
            self.queries.append(Query(name, qtype))
            fault = self._faults.get((name, qtype)) or self._faults.get((name, "*"))
            matches = [rr for rr in self._records if _key(str(rr.rname)) == name]
        if fault is Fault.DROP:
            raise _DropQuery(name)
        if fault is Fault.SERVFAIL:
            reply.header.rcode = RCODE.SERVFAIL
        elif fault is Fault.REFUSED:
            reply.header.rcode = RCODE.REFUSED
        elif not matches:
            reply.header.rcode = RCODE.NXDOMAIN
        else:
            for rr in matches:
                if rr.rtype == request.q.qtype:
                    reply.add_answer(rr)
        reply.header.aa = 1
        return reply


class DnsServer:
    """Serves a zone on host:port over UDP and TCP until stop()."""

    def __init__(self, zone: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self._resolver = _ZoneResolver(zone)
        quiet = DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
        self._udp = DNSServer(self._resolver, address=host, port=port, logger=quiet)
        bound = self._udp.server.server_address[1]
        self._tcp = DNSServer(self._resolver, address=host, port=bound, tcp=True, logger=quiet)
        self.host = host
        self.port: int = bound

    @property
    def address(self) -> str:
        """host:port, as `[dns] nameservers` takes it."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def queries(self) -> list[Query]:
        """Every query received so far, in order."""
        return list(self._resolver.queries)

    def load(self, zone: str) -> None:
        """Replace the zone's records."""
        self._resolver.load(zone)

    def set_fault(self, name: str, qtype: str, fault: Fault | None) -> None:
        """Make queries for (name, type) fail; qtype "*" covers every type; None clears."""
        self._resolver.set_fault(name, qtype, fault)

    def start(self) -> None:
        self._udp.start_thread()
        self._tcp.start_thread()

    def stop(self) -> None:
        self._udp.stop()
        self._tcp.stop()
        self._udp.server.server_close()
        self._tcp.server.server_close()

    def __enter__(self) -> DnsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
