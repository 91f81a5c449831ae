"""The aiosmtpd glue: a listener whose sessions speak hubd's replies and limits.

Owns: the SMTP subclass (enhanced codes on every reply, 421 on idle timeout and on too many
sessions, the line-length limit), and the registry of live sessions used to drain at shutdown.
Public: Listener, SessionRegistry, start_listener().
Limits: relies on aiosmtpd 1.4.6 internals `_handle_client`, `_timeout_cb`,
`_set_post_data_state` and `push`; the version is pinned and
tests/integration/test_bad_input.py exercises each of them.
See also: hubd/smtp/handler.py (the decisions), hubd/replies.py (the texts).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP

from hubd import replies
from hubd.config import HostPort
from hubd.replies import with_enhanced_code
from hubd.smtp.handler import InboundHandler
from hubd.smtp.params import MailParams, ParamError, split_mail_params, split_rcpt_params
from hubd.smtp.session import HubEnvelope, HubSession
from hubd.smtp.xshadow import IN_TRANSACTION, ORIGIN_NEEDS_XSHADOW

log = logging.getLogger(__name__)

MAX_COMMANDS_PER_SESSION = 10_000  # per verb; a session past it gets 421 and is closed


class SessionRegistry:
    """The live sessions of a node, so that shutdown can drain and close them."""

    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self._live: set[HubSMTP] = set()
        self._committing = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def __len__(self) -> int:
        return len(self._live)

    def admit(self, session: HubSMTP) -> bool:
        if len(self._live) >= self.max_sessions:
            return False
        self._live.add(session)
        return True

    def leave(self, session: HubSMTP) -> None:
        self._live.discard(session)

    def commit_started(self) -> None:
        self._committing += 1
        self._idle.clear()

    def commit_finished(self) -> None:
        self._committing -= 1
        if self._committing == 0:
            self._idle.set()

    async def drain(self, grace: float) -> None:
        """Let commits in flight answer their clients, then close every session with 421."""
        try:
            async with asyncio.timeout(grace):
                await self._idle.wait()
        except TimeoutError:
            log.warning("%d commits still in flight at shutdown", self._committing)
        for session in list(self._live):
            session.close_with(replies.SHUTTING_DOWN)


class HubSMTP(SMTP):
    """aiosmtpd's SMTP with hubd's reply texts and limits."""

    def __init__(
        self,
        handler: InboundHandler,
        registry: SessionRegistry,
        *,
        line_length_limit: int,
        **kwargs: Any,
    ) -> None:
        self._registry = registry
        self._shadow = handler.shadow
        self._raw_replies = False
        # Read by SMTP.__init__ to size the stream buffer, so it must be set before it runs.
        self.line_length_limit = line_length_limit
        super().__init__(handler, **kwargs)

    async def push(self, status: AnyStr) -> None:
        if isinstance(status, str) and not self._raw_replies:
            status = with_enhanced_code(status)
        await super().push(status)

    def _create_session(self) -> HubSession:
        return HubSession(self.loop)

    def _create_envelope(self) -> HubEnvelope:
        return HubEnvelope()

    async def smtp_MAIL(self, arg: str | None) -> None:
        # Take hubd's parameters out first: aiosmtpd would refuse them with 555.
        session = self._hub_session()
        session.pending_mail = MailParams()
        if arg:
            try:
                arg, params = split_mail_params(arg)
            except ParamError as error:
                await self.push(str(error.reply))
                return
            if params.origin:
                refusal = (
                    self._shadow.check_origin(session, params.origin)
                    if self._shadow is not None
                    else ORIGIN_NEEDS_XSHADOW
                )
                if refusal is not None:
                    await self.push(str(refusal))
                    return
            session.pending_mail = params
        await super().smtp_MAIL(arg)

    def _hub_session(self) -> HubSession:
        # A method, not a property: aiosmtpd's __init__ reads every property (getmembers).
        assert isinstance(self.session, HubSession)
        return self.session

    async def _shadow_verb(self) -> bool:
        """Common checks of the XSHADOW verbs; False when a reply was already sent."""
        if self._shadow is None:
            await self.push("502 5.5.1 Error: command not recognized")
            return False
        if not self._hub_session().extended_smtp:
            await self.push("503 5.5.1 Send EHLO first")
            return False
        if self.envelope is not None and self.envelope.mail_from is not None:
            await self.push(str(IN_TRANSACTION))
            return False
        return True

    async def smtp_XSHADOW(self, arg: str | None) -> None:
        if await self._shadow_verb():
            assert self._shadow is not None
            await self.push(await self._shadow.xshadow(self._hub_session(), arg))

    async def smtp_XQDISCARD(self, arg: str | None) -> None:
        if await self._shadow_verb():
            assert self._shadow is not None
            for line in await self._shadow.xqdiscard(self._hub_session(), arg):
                await self.push(line)

    async def smtp_XQTAKEN(self, arg: str | None) -> None:
        if await self._shadow_verb():
            assert self._shadow is not None
            await self.push(await self._shadow.xqtaken(self._hub_session(), arg))

    async def smtp_RCPT(self, arg: str | None) -> None:
        if arg and isinstance(self.session, HubSession):
            try:
                arg, self.session.pending_rcpt = split_rcpt_params(arg)
            except ParamError as error:
                await self.push(str(error.reply))
                return
        await super().smtp_RCPT(arg)

    async def smtp_EHLO(self, hostname: str) -> None:
        # RFC 2034: EHLO's own reply lines carry no enhanced codes.
        self._raw_replies = True
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._raw_replies = False

    async def smtp_HELO(self, hostname: str) -> None:
        self._raw_replies = True
        try:
            await super().smtp_HELO(hostname)
        finally:
            self._raw_replies = False

    async def smtp_DATA(self, arg: str) -> None:
        self._registry.commit_started()
        try:
            await super().smtp_DATA(arg)
        except Exception:
            # aiosmtpd resets the envelope only when the DATA hook returns. After a hook that
            # raised (answered 451 by handle_exception) the transaction is over all the same,
            # and the client's next MAIL must not get "503 nested MAIL command".
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            raise
        finally:
            self._registry.commit_finished()

    async def _handle_client(self) -> None:
        if not self._registry.admit(self):
            self.close_with(replies.TOO_MANY_SESSIONS)
            return
        try:
            await super()._handle_client()
        finally:
            self._registry.leave(self)

    def _timeout_cb(self) -> None:
        self.close_with(replies.IDLE_TIMEOUT)

    def close_with(self, reply: replies.Reply) -> None:
        """Send a final reply and close the connection."""
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            transport.write(f"{reply}\r\n".encode())
            transport.close()


@dataclass(slots=True)
class Listener:
    """A bound listening socket and the address it really got."""

    server: asyncio.Server
    address: HostPort

    async def close(self) -> None:
        self.server.close()
        await self.server.wait_closed()


async def start_listener(
    where: HostPort | socket.socket,
    handler: InboundHandler,
    registry: SessionRegistry,
    *,
    hostname: str,
    max_message_size: int,
    max_line_length: int,
    idle_timeout: float,
) -> Listener:
    """Serve SMTP sessions on `where`: an address to bind, or a socket bound already (by the
    supervisor of a node of several processes)."""

    def factory() -> HubSMTP:
        return HubSMTP(
            handler,
            registry,
            line_length_limit=max_line_length,
            hostname=hostname,
            ident="ESMTP hubd",
            data_size_limit=max_message_size,
            enable_SMTPUTF8=True,
            timeout=idle_timeout,
            command_call_limit=MAX_COMMANDS_PER_SESSION,
        )

    loop = asyncio.get_running_loop()
    if isinstance(where, socket.socket):
        server = await loop.create_server(factory, sock=where)
    else:
        server = await loop.create_server(factory, host=where.host, port=where.port)
    host, port = server.sockets[0].getsockname()[:2]
    return Listener(server, HostPort(host=host, port=port))
