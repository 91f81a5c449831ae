"""Outbound SMTP with aiosmtplib: one message to the first next hop that takes it.

Owns: trying a next hop's hosts in order (a route's list, or the addresses MX resolution
gives), STARTTLS per `[delivery] tls`, and turning every client error into per-recipient
results.
Public: SmtpCourier.
Failures: none raised; a connection failure, a 421 or a 4xx before the recipients are known
moves on to the next host; when none is left every recipient gets the last transient result,
marked `hop_down` only when no host could be talked to at all (a DNS answer never is).
With a shadow-aware peer (XSHADOW): says XSHADOW, sends the origin key (XORIGIN), returns
the peer's queue id so a shadow is kept, and asks for discard notices after the message.
Limits: connections are reused per host address (delivery/connections.py), with no NOOP
before reuse (a connection the server closed fails at MAIL, before anything is taken);
the transaction itself is delivery/transfer.py; hosts of peers declared dead are skipped.
See also: LIBNOTES.md section 2 (aiosmtplib's errors and STARTTLS default).
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import aiosmtplib

from hubd.config import HostPort
from hubd.delivery.connections import ConnectionPool, Outbound
from hubd.delivery.courier import DeliveryJob, RecipientResult
from hubd.delivery.transfer import StaleConnection, body_chunks, send_mail
from hubd.replies import Reply
from hubd.routing import HopKind
from hubd.routing.mx import MxResolver
from hubd.shadow.client import PeerLink, ShadowClient
from hubd.shadow.protocol import parse_queued_reply
from storage import ShadowRecord

log = logging.getLogger(__name__)

TlsMode = Literal["off", "opportunistic", "verify"]


@dataclass(frozen=True, slots=True)
class _HostFailed(Exception):
    """This host did not take the message; the next one may."""

    code: int
    text: str
    remote: str
    # The host could not be talked to at all (refused, timeout, dropped session, 421), as
    # opposed to a reply about this message: only the former says the next hop is down.
    unreachable: bool = False


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    local_hostname: str
    source_host: str | None
    tls: TlsMode
    tls_ca: Path | None
    connect_timeout: float
    command_timeout: float


def _tls_arguments(settings: SmtpSettings) -> dict[str, object]:
    if settings.tls == "off":
        return {"start_tls": False}
    if settings.tls == "verify":
        context = ssl.create_default_context(
            cafile=str(settings.tls_ca) if settings.tls_ca else None
        )
        return {"start_tls": True, "tls_context": context}
    # Opportunistic: upgrade when offered, without verification (RFC 7435).
    return {"start_tls": None, "validate_certs": False}


def _source_for(source: str | None, target: str) -> tuple[str, int] | None:
    # Bind to the node's own address only within its family: an IPv4 source cannot reach ::1.
    if source is None or (":" in source) != (":" in target):
        return None
    return (source, 0)


def _split(error: aiosmtplib.SMTPResponseException) -> tuple[int, str]:
    return error.code, error.message.replace("\r", " ").replace("\n", " ")


class SmtpCourier:
    """Delivers jobs over SMTP to the hosts of their next hop, in order."""

    def __init__(
        self,
        settings: SmtpSettings,
        mx: MxResolver | None = None,
        *,
        shadow: ShadowClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._mx = mx
        self._shadow = shadow
        self.pool = ConnectionPool(clock)

    async def close(self) -> None:
        """Close the connections kept for reuse."""
        await self.pool.close()

    async def _hosts(self, job: DeliveryJob) -> Sequence[HostPort] | Reply:
        if job.next_hop.kind is not HopKind.MX:
            hosts: Sequence[HostPort] = job.next_hop.hosts
        elif self._mx is None:
            return Reply(451, "4.4.0", "MX delivery is not configured")
        else:
            found = await self._mx.targets(job.next_hop.name)
            if isinstance(found, Reply):
                return found
            hosts = found
        dead = self._shadow.dead if self._shadow is not None else set()
        alive = [host for host in hosts if str(host) not in dead]
        if hosts and not alive:
            return Reply(451, "4.4.1", "Every host of this next hop is a peer declared dead")
        return alive

    async def deliver(self, job: DeliveryJob) -> list[RecipientResult]:
        hosts = await self._hosts(job)
        if isinstance(hosts, Reply):
            # An answer about this domain (NXDOMAIN, null MX, SERVFAIL), not a connection
            # failure: it never marks the next hop down, so every recipient gets its own lookup.
            text = f"{hosts.enhanced} {hosts.text}"
            return [RecipientResult(r, hosts.code, text) for r in job.recipients]
        last = _HostFailed(451, "4.4.1 No next hop host could be reached", "", unreachable=True)
        unreachable = True
        for host in hosts:
            try:
                return await self._send(host, job)
            except _HostFailed as failure:
                log.info(
                    "next hop %s for %s: %s %s", host, job.queue_id, failure.code, failure.text
                )
                last = failure
                unreachable = unreachable and failure.unreachable
        return [
            RecipientResult(r, last.code, last.text, last.remote, hop_down=unreachable)
            for r in job.recipients
        ]

    async def connect(self, host: HostPort) -> aiosmtplib.SMTP:
        """A connected client to `host` (bound to the node's address, STARTTLS as set)."""
        settings = self._settings
        client = aiosmtplib.SMTP(
            hostname=host.host,
            port=host.port,
            local_hostname=settings.local_hostname,
            source_address=_source_for(settings.source_host, host.host),
            timeout=settings.command_timeout,
            **_tls_arguments(settings),  # type: ignore[arg-type]
        )
        try:
            await client.connect(timeout=settings.connect_timeout)
        except (aiosmtplib.SMTPException, OSError) as error:
            client.close()
            raise _HostFailed(
                451, f"4.4.1 Connection to {host} failed: {error}", str(host), unreachable=True
            ) from None
        return client

    async def _open(self, host: HostPort) -> Outbound:
        client = await self.connect(host)
        link: PeerLink | None = None
        try:
            await client.ehlo()
            if self._shadow is not None:
                link = await self._shadow.open(client, str(host))
        except (aiosmtplib.SMTPException, OSError) as error:
            client.close()
            raise _HostFailed(
                451, f"4.4.2 Session with {host} failed: {error}", str(host), unreachable=True
            ) from None
        return Outbound(client, link)

    async def _send(self, host: HostPort, job: DeliveryJob) -> list[RecipientResult]:
        reused = self.pool.take(host)
        if reused is not None:
            try:
                return await self._use(host, reused, job, reused=True)
            except StaleConnection:
                pass  # the server closed it while idle: nothing was sent; start afresh
        return await self._use(host, await self._open(host), job, reused=False)

    async def _use(
        self, host: HostPort, outbound: Outbound, job: DeliveryJob, *, reused: bool
    ) -> list[RecipientResult]:
        try:
            results = await self._transaction(outbound, job, str(host), reused=reused)
        except BaseException:
            outbound.client.close()
            raise
        if outbound.link is not None and self._shadow is not None:
            try:
                await self._shadow.exchange_discards(outbound.client, outbound.link)
            except (aiosmtplib.SMTPException, OSError) as error:
                # The message is delivered already; notices will come with a heartbeat.
                log.info("discard exchange with %s failed: %s", host, error)
                outbound.client.close()
                return results
        self.pool.give(host, outbound)
        return results

    async def _transaction(
        self, outbound: Outbound, job: DeliveryJob, remote: str, *, reused: bool
    ) -> list[RecipientResult]:
        client, link = outbound.client, outbound.link
        addresses = [r.address for r in job.recipients]
        options = [f"XORIGIN={job.origin}"] if link is not None and job.origin else []
        try:
            sent = await send_mail(
                client,
                job.sender,
                addresses,
                body_chunks(job.body),
                size=job.body.size,
                options=options,
                reused=reused,
            )
        except aiosmtplib.SMTPRecipientsRefused as error:
            by_address = {e.recipient: (e.code, e.message) for e in error.recipients}
            return [
                RecipientResult(r, *by_address.get(r.address, (451, "4.3.0 Refused")), remote)
                for r in job.recipients
            ]
        except (aiosmtplib.SMTPSenderRefused, aiosmtplib.SMTPDataError) as error:
            code, text = _split(error)
            if code < 500:
                raise _HostFailed(code, text, remote) from None
            return [RecipientResult(r, code, text, remote) for r in job.recipients]
        except aiosmtplib.SMTPResponseException as error:
            code, text = _split(error)
            raise _HostFailed(
                code if code < 500 else 451, text, remote, unreachable=code == 421
            ) from None
        except (aiosmtplib.SMTPException, OSError) as error:
            raise _HostFailed(
                451, f"4.4.2 Lost connection to {remote}: {error}", remote, unreachable=True
            ) from None
        shadow = _shadow_record(link, sent.data_reply)
        results = []
        for recipient in job.recipients:
            response = sent.refused.get(recipient.address)
            if response is not None:
                results.append(RecipientResult(recipient, response.code, response.message, remote))
            else:
                results.append(
                    RecipientResult(
                        recipient,
                        250,
                        sent.data_reply,
                        remote,
                        shadow=shadow,
                        final=shadow is None,
                    )
                )
        return results


def _shadow_record(link: PeerLink | None, data_reply: str) -> ShadowRecord | None:
    """The shadow to keep when a shadow-aware peer accepted the message, else None."""
    if link is None:
        return None
    peer_queue_id = parse_queued_reply(data_reply)
    if peer_queue_id is None:
        return None
    return ShadowRecord(link.address, link.peer.name, link.peer.incarnation, peer_queue_id)
