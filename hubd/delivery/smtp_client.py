"""Outbound SMTP with aiosmtplib: one message to the first next hop that takes it.

Owns: trying a next hop's hosts in order (a route's list, or the addresses MX resolution
gives), STARTTLS per `[delivery] tls`, and turning every client error into per-recipient
results.
Public: SmtpCourier.
Failures: none raised; a connection failure, a 421 or a 4xx before the recipients are known
moves on to the next host; when none is left every recipient gets the last transient result.
Limits: connections are reused per host address (delivery/connections.py); no PIPELINING
(aiosmtplib has none).
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
from hubd.delivery.connections import ConnectionPool
from hubd.delivery.courier import DeliveryJob, RecipientResult
from hubd.replies import Reply
from hubd.routing import HopKind
from hubd.routing.mx import MxResolver

log = logging.getLogger(__name__)

TlsMode = Literal["off", "opportunistic", "verify"]


@dataclass(frozen=True, slots=True)
class _HostFailed(Exception):
    """This host did not take the message; the next one may."""

    code: int
    text: str
    remote: str


class _StaleConnection(Exception):
    """A reused connection turned out closed before anything of the message was sent."""


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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._mx = mx
        self.pool = ConnectionPool(clock)

    async def close(self) -> None:
        """Close the connections kept for reuse."""
        await self.pool.close()

    async def _hosts(self, job: DeliveryJob) -> Sequence[HostPort] | Reply:
        if job.next_hop.kind is not HopKind.MX:
            return job.next_hop.hosts
        if self._mx is None:
            return Reply(451, "4.4.0", "MX delivery is not configured")
        return await self._mx.targets(job.next_hop.name)

    async def deliver(self, job: DeliveryJob) -> list[RecipientResult]:
        hosts = await self._hosts(job)
        if isinstance(hosts, Reply):
            text = f"{hosts.enhanced} {hosts.text}"
            return [RecipientResult(r, hosts.code, text) for r in job.recipients]
        last = _HostFailed(451, "4.4.1 No next hop host could be reached", "")
        for host in hosts:
            try:
                return await self._send(host, job)
            except _HostFailed as failure:
                log.info(
                    "next hop %s for %s: %s %s", host, job.queue_id, failure.code, failure.text
                )
                last = failure
        return [
            RecipientResult(r, last.code, last.text, last.remote, hop_down=True)
            for r in job.recipients
        ]

    async def _connect(self, host: HostPort) -> aiosmtplib.SMTP:
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
                451, f"4.4.1 Connection to {host} failed: {error}", str(host)
            ) from None
        return client

    async def _send(self, host: HostPort, job: DeliveryJob) -> list[RecipientResult]:
        reused = self.pool.take(host)
        if reused is not None:
            try:
                return await self._use(host, reused, job, reused=True)
            except _StaleConnection:
                pass  # the server closed it while idle: nothing was sent; start afresh
        return await self._use(host, await self._connect(host), job, reused=False)

    async def _use(
        self, host: HostPort, client: aiosmtplib.SMTP, job: DeliveryJob, *, reused: bool
    ) -> list[RecipientResult]:
        try:
            results = await self._transaction(client, job, str(host), reused=reused)
        except BaseException:
            client.close()
            raise
        self.pool.give(host, client)
        return results

    async def _transaction(
        self, client: aiosmtplib.SMTP, job: DeliveryJob, remote: str, *, reused: bool
    ) -> list[RecipientResult]:
        addresses = [r.address for r in job.recipients]
        if reused:
            try:
                # A cheap check before MAIL: a connection the server dropped fails here.
                await client.noop()
            except (aiosmtplib.SMTPException, OSError):
                raise _StaleConnection from None
        try:
            refused, data_reply = await client.sendmail(job.sender, addresses, job.body)
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
            raise _HostFailed(code if code < 500 else 451, text, remote) from None
        except (aiosmtplib.SMTPException, OSError) as error:
            raise _HostFailed(451, f"4.4.2 Lost connection to {remote}: {error}", remote) from None
        results = []
        for recipient in job.recipients:
            if recipient.address in refused:
                response = refused[recipient.address]
                results.append(RecipientResult(recipient, response.code, response.message, remote))
            else:
                results.append(RecipientResult(recipient, 250, data_reply, remote))
        return results
