"""The inbound session's decisions, as aiosmtpd handler hooks that return replies.

Owns: EHLO extensions, MAIL/RCPT checks (syntax, relay, recipient limit), the DATA checks
(line ends, NUL, hop count), the Received: header, and handing the message to the intake.
Public: InboundHandler, InboundLimits, ReceivedMessage, Intake.
Failures: an exception in a hook becomes `451 4.3.0` (handle_exception), never a 5xx.
Limits: the whole message is in memory while DATA is checked and committed (aiosmtpd 1.4.6
has no streaming hook); `max_message_size` bounds it.
See also: hubd/smtp/server.py (the aiosmtpd subclass), hubd/intake.py (the commit).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hubd import replies
from hubd.queueid import new_queue_id
from hubd.shadow.delayed_ack import Departures
from hubd.shadow.protocol import Hello
from hubd.smtp.address import parse_mailbox
from hubd.smtp.message import (
    count_received,
    find_content_fault,
    message_id,
    received_header,
)
from hubd.smtp.params import MailParams, RcptParams
from hubd.smtp.relay import RelayPolicy, decide_recipient
from hubd.smtp.xshadow import ShadowServer, client_ip

log = logging.getLogger(__name__)

_EXTENSIONS = ("250-PIPELINING", "250-ENHANCEDSTATUSCODES", "250-DSN")
# aiosmtpd hands the null reverse-path (RFC 5321 4.5.5) to hooks as "<>" and needs
# envelope.mail_from to stay truthy; hubd's queue stores the null sender as "".
_NULL_SENDER = "<>"


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """A message as accepted at the end of DATA, before it is committed."""

    queue_id: str
    sender: str
    recipients: tuple[str, ...]
    data: bytes
    received_at: float
    message_id: str | None
    client_ip: str
    helo: str
    mail_params: MailParams = field(default_factory=MailParams)
    rcpt_params: tuple[RcptParams, ...] = ()
    upstream: Hello | None = None  # the XSHADOW peer this came from, owed a discard notice


Intake = Callable[[ReceivedMessage], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class DelayedAck:
    """Hold the 250 of sessions that are not shadow-aware until the message left the node."""

    departures: Departures
    max_delay: float


@dataclass(frozen=True, slots=True)
class InboundLimits:
    max_recipients: int
    max_received_headers: int


def _protocol(session: Any) -> str:
    name = "ESMTP" if session.extended_smtp else "SMTP"
    if session.ssl is not None:
        name += "S"
    if session.authenticated:
        name += "A"
    return name


class InboundHandler:
    """aiosmtpd hooks for a relay or submission listener."""

    def __init__(
        self,
        *,
        hostname: str,
        policy: RelayPolicy,
        limits: InboundLimits,
        intake: Intake,
        clock: Callable[[], float],
        rng: random.Random,
        shadow: ShadowServer | None = None,
        delayed_ack: DelayedAck | None = None,
    ) -> None:
        self._hostname = hostname
        self._policy = policy
        self._limits = limits
        self._intake = intake
        self._clock = clock
        self._rng = rng
        self.shadow = shadow
        self._delayed_ack = delayed_ack

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        if parse_helo(hostname) is None:
            return [str(replies.BAD_HELO)]
        session.host_name = hostname
        extensions = list(_EXTENSIONS)
        if self.shadow is not None and self.shadow.is_peer(client_ip(session)):
            extensions.append(self.shadow.extension())
        return [*responses[:-1], *extensions, responses[-1]]

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        if address != _NULL_SENDER and parse_mailbox(address) is None:
            return str(replies.BAD_SENDER_SYNTAX)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.mail_params = session.pending_mail
        return str(replies.SENDER_OK)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        mailbox = parse_mailbox(address)
        if mailbox is None:
            return str(replies.BAD_RECIPIENT_SYNTAX)
        if len(envelope.rcpt_tos) >= self._limits.max_recipients:
            return str(replies.TOO_MANY_RECIPIENTS)
        reply = decide_recipient(
            self._policy,
            mailbox,
            client_ip=session.peer[0],
            authenticated=bool(session.authenticated),
        )
        if reply.is_success:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
            envelope.rcpt_params.append(session.pending_rcpt)
        return str(reply)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data: bytes = envelope.original_content
        fault = find_content_fault(data)
        if fault is not None:
            return str(fault)
        if count_received(data) > self._limits.max_received_headers:
            return str(replies.ROUTING_LOOP)
        now = self._clock()
        queue_id = new_queue_id(now, self._rng)
        trace = received_header(
            helo=session.host_name,
            client_ip=session.peer[0],
            hostname=self._hostname,
            protocol=_protocol(session),
            queue_id=queue_id,
            recipients=list(envelope.rcpt_tos),
            now=datetime.fromtimestamp(now, UTC),
        )
        message = ReceivedMessage(
            queue_id=queue_id,
            sender="" if envelope.mail_from == _NULL_SENDER else envelope.mail_from,
            recipients=tuple(envelope.rcpt_tos),
            data=trace + data,
            received_at=now,
            message_id=message_id(data),
            client_ip=session.peer[0],
            helo=session.host_name,
            mail_params=envelope.mail_params,
            rcpt_params=tuple(envelope.rcpt_params),
            upstream=session.upstream,
        )
        delayed = self._delayed_ack if session.upstream is None else None
        if delayed is None:
            await self._intake(message)
            return str(replies.queued(queue_id))
        delayed.departures.expect(queue_id)
        try:
            await self._intake(message)
        except BaseException:
            delayed.departures.forget(queue_id)
            raise
        # XSHADOW.md, delayed acknowledgement: the client keeps its copy until this 250.
        await delayed.departures.wait(queue_id, delayed.max_delay)
        return str(replies.queued(queue_id))

    async def handle_exception(self, error: Exception) -> str:
        log.exception("inbound session error", exc_info=error)
        return str(replies.LOCAL_ERROR)


def parse_helo(hostname: str) -> str | None:
    """The EHLO/HELO argument if it is a plausible name or address literal, else None."""
    if not hostname or len(hostname) > 255 or any(c <= " " or c == "\x7f" for c in hostname):
        return None
    return hostname
