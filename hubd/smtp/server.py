"""The SMTP glue: carries bytes between a socket and a Session, and runs its actions.

Owns: the per-connection protocol (asyncio streams: read a line, feed the session, send its
reply, run its action), the TLS handshakes (STARTTLS, and implicit TLS before the greeting),
reading DATA (the one place that does: in chunks of what arrived,
into memory or, past `smtp.spool_threshold`, a spool file), the idle and DATA timeouts, the
live sessions of a node (so shutdown can drain them), and binding listeners.
Public: Inbound, Listener, HubSMTP, start_listener().
Failures: none raised into asyncio: a client that vanishes ends its session quietly; a
fault in hubd is logged and answered 421 4.3.0 before closing.
Limits: a plain asyncio StreamReaderProtocol. aiosmtpd's SMTP class was the base until none
of its verbs, parsers, replies or timers were used any more, and its constructor (which
inspects the class and the handler on every connection) was an eighth of a node's CPU.
See also: hubd/smtp/session.py (every decision), hubd/smtp/executor.py (node actions),
hubd/smtp/spooling.py (the spool switch).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from hubd import replies
from hubd.backpressure import Level
from hubd.config import HostPort
from hubd.replies import Reply
from hubd.smtp.actions import (
    Close,
    Commit,
    DataReceived,
    Failed,
    ReceiveData,
    StartTls,
    Step,
    TlsStarted,
)
from hubd.smtp.data import DataReader
from hubd.smtp.executor import Executor
from hubd.smtp.limits import NodeCounters
from hubd.smtp.policy import ListenerPolicy
from hubd.smtp.session import Session, TimeoutKind
from hubd.smtp.spooling import BodyBuffer, SpooledContent
from hubd.tls import ServerTls, tls_version
from storage import Spool
from storage.errors import is_disk_full

log = logging.getLogger(__name__)


_DATA_CHUNK = 1 << 16
_HANDSHAKE_TIMEOUT = 30.0  # seconds, at most (a client that stalls mid-handshake is cut off)


class _TooLong:
    """A line longer than the reader's buffer, read to its end and dropped."""


_TOO_LONG = _TooLong()


@dataclass(slots=True)
class Inbound:
    """What every listener of a node shares: the executor, the counters, time and chance."""

    executor: Executor
    counters: NodeCounters
    clock: Callable[[], float]
    rng: random.Random
    spool: Spool | None = None  # where bodies past spool_threshold go (None: held in memory)
    spool_threshold: int = 1 << 20
    pressure: Callable[[], Level] = lambda: Level.NORMAL  # the node's back-pressure level
    inflight: int = 0  # bytes of DATA received and not yet committed (or dropped)
    tls: ServerTls | None = None  # the certificate, for STARTTLS and implicit TLS
    live: set[HubSMTP] = field(default_factory=set)

    async def drain(self, grace: float) -> None:
        """Let commits in flight answer their clients, then close every session with 421."""
        await self.executor.settle(grace)
        for connection in list(self.live):
            connection.close_with(replies.SHUTTING_DOWN)


class HubSMTP(asyncio.StreamReaderProtocol):
    """One connection, with hubd's session doing the talking."""

    def __init__(
        self, policy: ListenerPolicy, inbound: Inbound, *, implicit_tls: bool = False
    ) -> None:
        loop = asyncio.get_running_loop()
        # The reader's limit is the longest line: a longer one is read to its end and refused.
        self._reader = asyncio.StreamReader(limit=policy.limits.content.max_line_length, loop=loop)
        # As a server's protocol (a client_connected_cb, which starts the session), so that
        # StreamWriter.start_tls() takes the server side of the handshake.
        super().__init__(self._reader, client_connected_cb=self._connected, loop=loop)
        self._policy = policy
        self._inbound = inbound
        self._implicit_tls = implicit_tls
        self.transport: asyncio.BaseTransport | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._unread = b""  # bytes after the end of DATA: the client's next commands
        self._held = 0  # this session's part of inbound.inflight

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        super().connection_made(transport)  # calls _connected(), which starts the session

    def _connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> Coroutine[Any, Any, None]:
        self._writer = writer
        return self._handle_client()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        task: asyncio.Task[None] | None = getattr(self, "_task", None)  # the session's
        if task is not None:
            task.cancel()
        self.transport = None

    async def _handle_client(self) -> None:
        # Runs the whole session; cancelled when the connection is lost.
        transport = self.transport
        assert transport is not None
        peer = transport.get_extra_info("peername")
        client_ip = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        tls = None
        if self._implicit_tls:
            try:
                tls = await self._handshake()
            except (OSError, TimeoutError):
                self._hang_up()
                return  # no session yet: a client that cannot do TLS is just gone
        session = Session(
            self._policy,
            client_ip=client_ip,
            counters=self._inbound.counters,
            clock=self._inbound.clock,
            rng=self._inbound.rng,
            pressure=self._inbound.pressure,
            tls=tls,
        )
        self._inbound.live.add(self)
        try:
            step: Step | None = session.open()
            while step is not None:
                await self._perform(session, step)
                step = None if session.closed else await self._next_command(session)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, ssl.SSLError):
            pass  # the client went away, stopped reading our replies, or botched TLS
        except Exception:
            log.exception("inbound session from %s failed", session.client_ip)
            self.close_with(replies.LOCAL_ERROR_CLOSING)
        finally:
            self._release()
            session.connection_lost()
            self._inbound.live.discard(self)
            self._hang_up()

    async def _next_command(self, session: Session) -> Step | None:
        """The session's answer to the client's next line; None when the client is gone."""
        try:
            async with asyncio.timeout(self._policy.limits.idle_timeout):
                line = await self._read_line()
        except TimeoutError:
            return session.timed_out(TimeoutKind.IDLE)
        except asyncio.IncompleteReadError:
            return None
        if isinstance(line, _TooLong):
            return session.line_too_long()
        return session.receive_line(line)

    async def _perform(self, session: Session, step: Step) -> None:
        """Send the step's reply and carry out its action, until no action is left."""
        next_step: Step | None = step
        while next_step is not None:
            if next_step.reply is not None:
                await self._send(next_step.reply)
            action = next_step.action
            if action is None:
                return
            if isinstance(action, Close):
                self._hang_up()
                return
            if isinstance(action, ReceiveData):
                next_step = await self._receive_data(session, action)
            elif isinstance(action, StartTls):
                next_step = session.finish(TlsStarted(await self._handshake()))
            else:
                next_step = session.finish(await self._inbound.executor.run(action))
                if isinstance(action, Commit):
                    self._release()  # committed or failed: no longer in flight

    async def _handshake(self) -> str:
        """Turn the connection into TLS (server side); the protocol version it got."""
        tls = self._inbound.tls
        writer = self._writer
        assert tls is not None
        assert writer is not None
        # Plain text sent after STARTTLS but before the handshake is an injection attempt
        # (CVE-2011-0411): none of it may count as sent under TLS. StreamReader has no public
        # way to drop what it holds. (start_tls stops reading before its first await, so
        # nothing plain can arrive after this.)
        self._unread = b""
        self._reader._buffer.clear()  # type: ignore[attr-defined]
        await writer.start_tls(
            tls.context(),
            ssl_handshake_timeout=min(_HANDSHAKE_TIMEOUT, self._policy.limits.idle_timeout),
        )
        self.transport = writer.transport
        return tls_version(writer.get_extra_info("ssl_object")) or "TLS"

    async def _receive_data(self, session: Session, action: ReceiveData) -> Step | None:
        """Read the message text; the only place DATA is read."""
        reader = DataReader(action.limits)
        inbound = self._inbound
        kept = BodyBuffer(inbound.spool, inbound.spool_threshold)
        limits = self._policy.limits
        lost: OSError | None = None  # the spool could not take the message (a full disk)
        try:
            async with asyncio.timeout(limits.data_timeout) as whole:
                # One lazy timer for stalls, not one per chunk.
                with _IdleWatch(limits.idle_timeout, whole) as watch:
                    while not reader.done:
                        chunk = await self._read_chunk()
                        watch.touch()
                        content = reader.feed(chunk)
                        if reader.fault is not None:
                            kept.clear()
                            self._release()
                        elif content and lost is None:
                            lost = self._keep(kept, content)
            self._unread = reader.rest
        except TimeoutError:
            kept.clear()
            return session.timed_out(TimeoutKind.IDLE if watch.stalled else TimeoutKind.DATA)
        except BaseException:  # the client went away mid-DATA (or the node stops)
            kept.clear()
            raise
        if lost is not None:
            self._release()
            return session.finish(Failed(no_space=is_disk_full(lost)))
        received = kept.result()
        step = session.finish(DataReceived(reader.summary(), received))
        if not isinstance(step.action, Commit):
            self._release()
            if isinstance(received, SpooledContent):
                received.discard()  # refused: nothing of it is kept
        return step

    def _keep(self, kept: BodyBuffer, content: bytes) -> OSError | None:
        """Add DATA to what is kept; the error when the spool cannot take it (the rest of
        DATA is then read and dropped, and the client told 452 or 451, never 250)."""
        try:
            kept.add(content)
        except OSError as error:
            log.error("cannot spool a message from %s: %s", self._peer_name(), error)
            with contextlib.suppress(OSError):
                kept.clear()
            return error
        self._held += len(content)
        self._inbound.inflight += len(content)
        return None

    def _release(self) -> None:
        self._inbound.inflight -= self._held
        self._held = 0

    def _peer_name(self) -> str:
        transport = self.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        return str(peer[0]) if isinstance(peer, tuple) else str(peer)

    async def _read_line(self) -> bytes | _TooLong:
        """One line up to LF; a longer one than the buffer holds is read to its end."""
        start = b""
        if self._unread:
            end = self._unread.find(b"\n")
            if end >= 0:
                first, self._unread = self._unread[: end + 1], self._unread[end + 1 :]
                return first
            start, self._unread = self._unread, b""  # a line begun in the last DATA chunk
        line = await self._read_stream_line()
        if not start or isinstance(line, _TooLong):
            return line
        whole = start + line
        return _TOO_LONG if len(whole) > self._policy.limits.content.max_line_length else whole

    async def _read_stream_line(self) -> bytes | _TooLong:
        try:
            return await self._reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as error:
            await self._reader.readexactly(error.consumed)
        while True:
            try:
                await self._reader.readuntil(b"\n")
                return _TOO_LONG
            except asyncio.LimitOverrunError as error:
                await self._reader.readexactly(error.consumed)

    async def _read_chunk(self) -> bytes:
        """The next bytes of DATA: whatever has arrived, up to 64 KiB (never a line at a
        time: the reader finds line ends itself, and a chunk costs one call, not sixty)."""
        if self._unread:
            chunk, self._unread = self._unread, b""
            return chunk
        chunk = await self._reader.read(_DATA_CHUNK)
        if not chunk:
            raise asyncio.IncompleteReadError(b"", None)
        return chunk

    async def _send(self, reply: Reply) -> None:
        writer = self._writer
        assert writer is not None
        writer.write(reply.wire())
        if writer.transport.get_write_buffer_size():
            # The socket did not take it all: a client that does not read its replies must
            # not hold the session forever. (Most replies go out at once, with no timer.)
            async with asyncio.timeout(self._policy.limits.idle_timeout):
                await writer.drain()

    def _hang_up(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        assert isinstance(transport, asyncio.WriteTransport)
        # A client whose socket buffer is full is not reading: drop what it would not take.
        if transport.get_write_buffer_size():
            transport.abort()
        else:
            transport.close()

    def close_with(self, reply: Reply) -> None:
        """Send a final reply and close the connection (shutdown, and hubd's own faults)."""
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            transport.write(reply.wire())
            transport.close()


class _IdleWatch:
    """Ends a timeout block early once no bytes came for `idle` seconds.

    One timer, re-armed only when it fires: touch() is a clock read, so a DATA of 100,000
    lines does not schedule 100,000 timers.
    """

    def __init__(self, idle: float, block: asyncio.Timeout) -> None:
        self._idle = idle
        self._block = block
        self._loop = asyncio.get_running_loop()
        self._last = self._loop.time()
        self._timer: asyncio.TimerHandle | None = None
        self.stalled = False

    def __enter__(self) -> _IdleWatch:
        self._timer = self._loop.call_at(self._last + self._idle, self._check)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def touch(self) -> None:
        self._last = self._loop.time()

    def _check(self) -> None:
        due = self._last + self._idle
        if self._loop.time() >= due:
            self.stalled = True
            self._block.reschedule(self._loop.time())  # expire the block now
        else:
            self._timer = self._loop.call_at(due, self._check)


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
    policy: ListenerPolicy,
    inbound: Inbound,
    *,
    backlog: int,
    implicit_tls: bool = False,
) -> Listener:
    """Serve SMTP sessions under `policy` on `where`: an address to bind, or a socket bound
    already (by the supervisor of a node of several processes). asyncio calls listen() with
    `backlog` on either. With `implicit_tls` every connection starts with a TLS handshake
    (465 style), with the certificate in `inbound.tls`."""
    loop = asyncio.get_running_loop()
    if (implicit_tls or policy.starttls) and inbound.tls is None:
        raise ValueError("a TLS listener needs inbound.tls")

    def factory() -> HubSMTP:
        return HubSMTP(policy, inbound, implicit_tls=implicit_tls)

    if isinstance(where, socket.socket):
        server = await loop.create_server(factory, sock=where, backlog=backlog)
    else:
        server = await loop.create_server(
            factory, host=where.host, port=where.port, backlog=backlog
        )
    host, port = server.sockets[0].getsockname()[:2]
    return Listener(server, HostPort(host=host, port=port))
