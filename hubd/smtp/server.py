"""The aiosmtpd glue: carries bytes between a socket and a Session, and runs its actions.

Owns: the per-connection loop (read a line, feed the session, send its reply, run its
action), reading DATA (the one place that does), the idle and DATA timeouts, the live
sessions of a node (so shutdown can drain them), and binding listeners.
Public: Inbound, Listener, HubSMTP, start_listener().
Failures: none raised into aiosmtpd or asyncio: a client that vanishes ends its session
quietly; a fault in hubd is logged and answered 421 4.3.0 before closing.
Limits: relies on these aiosmtpd 1.4.6 internals (pinned; tests/unit/smtp/test_server.py
checks each): SMTP.__init__ sizes its StreamReader from the class attribute
`line_length_limit`; connection_made() sets `_reader`/`_writer` and starts
`_handle_client()` as a task, which connection_lost() cancels; `_timeout_cb` is the
callback of the one timer connection_made() starts (made a no-op); eof_received() is
overridden so EOF no longer cancels the session. aiosmtpd's own command loop, verbs,
replies and timer are not used. The whole message is held in memory while it is read.
See also: hubd/smtp/session.py (every decision), hubd/smtp/executor.py (node actions).
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from aiosmtpd.smtp import SMTP

from hubd import replies
from hubd.config import HostPort
from hubd.replies import Reply
from hubd.smtp.actions import Close, DataReceived, ReceiveData, Step
from hubd.smtp.data import DataReader
from hubd.smtp.executor import Executor
from hubd.smtp.limits import NodeCounters
from hubd.smtp.policy import ListenerPolicy
from hubd.smtp.session import Session, TimeoutKind

log = logging.getLogger(__name__)


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
    live: set[HubSMTP] = field(default_factory=set)

    async def drain(self, grace: float) -> None:
        """Let commits in flight answer their clients, then close every session with 421."""
        await self.executor.settle(grace)
        for connection in list(self.live):
            connection.close_with(replies.SHUTTING_DOWN)


class HubSMTP(SMTP):
    """One connection: aiosmtpd's protocol object, with hubd's session doing the talking."""

    def __init__(self, policy: ListenerPolicy, inbound: Inbound) -> None:
        self._policy = policy
        self._inbound = inbound
        # Read by SMTP.__init__ to size the stream buffer, so it must be set before it runs.
        self.line_length_limit = policy.limits.content.max_line_length
        super().__init__(_NoHooks(), hostname=policy.hostname, timeout=policy.limits.idle_timeout)

    def _timeout_cb(self) -> None:
        # aiosmtpd's timer fires once, idle_timeout after the connection is made; hubd times
        # every read itself (the idle timer must not run while the node, not the client, is
        # slow), so the callback does nothing.
        return

    def eof_received(self) -> bool | None:
        # aiosmtpd cancels the session at EOF, losing what the client sent before it (a
        # pipelined QUIT, or a whole transaction); let the reader drain it instead.
        return asyncio.StreamReaderProtocol.eof_received(self)

    async def _handle_client(self) -> None:
        # Replaces aiosmtpd's command loop; it is cancelled when the connection is lost.
        transport = self.transport
        assert transport is not None
        peer = transport.get_extra_info("peername")
        session = Session(
            self._policy,
            client_ip=str(peer[0]) if isinstance(peer, tuple) else str(peer),
            counters=self._inbound.counters,
            clock=self._inbound.clock,
            rng=self._inbound.rng,
        )
        self._inbound.live.add(self)
        try:
            step: Step | None = session.open()
            while step is not None:
                await self._perform(session, step)
                step = None if session.closed else await self._next_command(session)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the client went away, or stopped reading our replies
        except Exception:
            log.exception("inbound session from %s failed", session.client_ip)
            self.close_with(replies.LOCAL_ERROR_CLOSING)
        finally:
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
            else:
                next_step = session.finish(await self._inbound.executor.run(action))

    async def _receive_data(self, session: Session, action: ReceiveData) -> Step | None:
        """Read the message text; the only place DATA is read (a spool would go here)."""
        reader = DataReader(action.limits)
        kept: list[bytes] = []
        limits = self._policy.limits
        try:
            async with asyncio.timeout(limits.data_timeout) as whole:
                # One lazy timer for stalls, not one per line: DATA is read line by line.
                with _IdleWatch(limits.idle_timeout, whole) as watch:
                    while not reader.done:
                        chunk = await self._read_chunk()
                        watch.touch()
                        content = reader.feed(chunk)
                        if reader.fault is not None:
                            kept.clear()
                        elif content:
                            kept.append(content)
        except TimeoutError:
            return session.timed_out(TimeoutKind.IDLE if watch.stalled else TimeoutKind.DATA)
        except asyncio.IncompleteReadError:
            return None  # the client went away mid-DATA: nothing is committed
        return session.finish(DataReceived(reader.summary(), b"".join(kept)))

    async def _read_line(self) -> bytes | _TooLong:
        """One line up to LF; a longer one than the buffer holds is read to its end."""
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
        """The next bytes of DATA: a line, or as much of a long one as the buffer holds."""
        try:
            return await self._reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as error:
            return await self._reader.readexactly(error.consumed)

    async def _send(self, reply: Reply) -> None:
        self._writer.write(reply.wire())
        # A client that does not read its replies must not hold the session forever.
        async with asyncio.timeout(self._policy.limits.idle_timeout):
            await self._writer.drain()

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


class _NoHooks:
    """aiosmtpd's handler: hubd needs none of its hooks, since no aiosmtpd verb runs."""


@dataclass(slots=True)
class Listener:
    """A bound listening socket and the address it really got."""

    server: asyncio.Server
    address: HostPort

    async def close(self) -> None:
        self.server.close()
        await self.server.wait_closed()


async def start_listener(
    where: HostPort | socket.socket, policy: ListenerPolicy, inbound: Inbound, *, backlog: int
) -> Listener:
    """Serve SMTP sessions under `policy` on `where`: an address to bind, or a socket bound
    already (by the supervisor of a node of several processes). asyncio calls listen() with
    `backlog` on either."""
    loop = asyncio.get_running_loop()

    def factory() -> HubSMTP:
        return HubSMTP(policy, inbound)

    if isinstance(where, socket.socket):
        server = await loop.create_server(factory, sock=where, backlog=backlog)
    else:
        server = await loop.create_server(
            factory, host=where.host, port=where.port, backlog=backlog
        )
    host, port = server.sockets[0].getsockname()[:2]
    return Listener(server, HostPort(host=host, port=port))
