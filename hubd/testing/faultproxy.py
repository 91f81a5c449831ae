"""A TCP proxy that cuts SMTP connections where a test tells it to, or stalls them all.

Owns: relaying connections to one target, cutting them at matching lines, and partitions
(every connection held open with no byte passing, as an unreachable host's would be, until
healed).  Not: SMTP parsing.
Public: FaultProxy, Cut, Direction, When.
Failures: wait_fired() raises TimeoutError; cut() raises ValueError on bad arguments; a client
whose target cannot be reached has its connection closed (and a warning is logged).
Limits: rules see lines (bytes up to LF) of plaintext only: after a 220 reply to STARTTLS a
connection is relayed raw.  Matches are counted per rule over the proxy's life, not per
connection.  resume() rebinds the old port, which another process may have taken meanwhile.
See also: hubd/testing/helpers.py, tests/unit/test_faultproxy.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import re
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Self

__all__ = ["Cut", "Direction", "FaultProxy", "When"]

log = logging.getLogger(__name__)

_READ_SIZE = 65536
# A partial line longer than this is forwarded unexamined, so a stream without line ends
# (or one enormous line) neither stalls nor fills memory.  SMTP lines are at most 1000 bytes.
_MAX_HELD = 65536


class Direction(enum.StrEnum):
    """Which way bytes flow through the proxy."""

    CLIENT = "client"  # client to target: SMTP commands and message content
    SERVER = "server"  # target to client: SMTP replies


class When(enum.StrEnum):
    """Whether a cut happens before or after the matching line is forwarded."""

    BEFORE = "before"
    AFTER = "after"


@dataclass(slots=True, eq=False)
class Cut:
    """One fault rule and its counters (the proxy updates `matches` and `fired`)."""

    direction: Direction
    pattern: re.Pattern[bytes]
    when: When
    occurrence: int
    times: int
    matches: int = 0
    fired: int = 0

    @property
    def retired(self) -> bool:
        """True once the rule has fired `times` times; it then matches nothing."""
        return self.fired >= self.times


@dataclass(slots=True)
class _Chunk:
    data: bytes
    whole: bool  # a complete line that rules may examine


@dataclass(slots=True)
class _LineBuffer:
    """Splits one direction's byte stream into lines, holding a partial line until it ends."""

    held: bytearray = field(default_factory=bytearray)
    overlong: bool = False  # the held line's start was already forwarded unexamined

    def feed(self, data: bytes) -> list[_Chunk]:
        """The chunks that `data` completes, in order; a too-long partial goes out unexamined."""
        self.held += data
        chunks: list[_Chunk] = []
        start = 0
        while (end := self.held.find(b"\n", start)) != -1:
            chunks.append(_Chunk(bytes(self.held[start : end + 1]), whole=not self.overlong))
            self.overlong = False
            start = end + 1
        del self.held[:start]
        if len(self.held) > _MAX_HELD:
            chunks.append(_Chunk(self.take(), whole=False))
            self.overlong = True
        return chunks

    def finish(self) -> list[_Chunk]:
        """The final partial line at end of stream, if any."""
        whole = not self.overlong
        self.overlong = False
        return [_Chunk(self.take(), whole)] if self.held else []

    def take(self) -> bytes:
        """Everything held, leaving the buffer empty."""
        data = bytes(self.held)
        self.held.clear()
        return data


@dataclass(slots=True, eq=False)
class _Link:
    """One client connection and its connection to the target."""

    client: asyncio.StreamWriter
    target: asyncio.StreamWriter | None = None
    cut: bool = False
    raw: bool = False
    starttls_asked: bool = False

    def writers(self) -> list[asyncio.StreamWriter]:
        return [w for w in (self.client, self.target) if w is not None]

    def abort(self) -> None:
        for writer in self.writers():
            writer.transport.abort()

    def close(self) -> None:
        for writer in self.writers():
            writer.close()

    async def wait_closed(self) -> None:
        for writer in self.writers():
            # The error that ended a connection is reported by its own pump; here it is old news.
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class FaultProxy:
    """Relay TCP connections to one target and cut them at lines that match a rule."""

    def __init__(
        self,
        listen_host: str,
        target_host: str,
        target_port: int,
        *,
        source_host: str | None = None,
        listen_port: int = 0,
        timeout: float = 10.0,
    ) -> None:
        """Prepare a proxy; nothing listens until start().

        `source_host` is the local address of connections to the target (the target may check
        which peer connects); `timeout` bounds connecting to the target and flushing before a cut.
        """
        self.listen_host = listen_host
        self.target_host = target_host
        self.target_port = target_port
        self.source_host = source_host
        # When true, new connections are accepted and closed at once (a dead next hop).
        self.refuse = False
        # Set while bytes may flow; cleared by partition(), set again by heal().
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._listen_port = listen_port
        self._timeout = timeout
        self._server: asyncio.Server | None = None
        self._old_servers: list[asyncio.Server] = []
        self._port: int | None = None
        self._stopped = False
        self._rules: list[Cut] = []
        self._fired = 0
        self._fired_event = asyncio.Event()
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._serial = itertools.count(1)

    # Lifecycle

    async def start(self) -> None:
        """Listen on listen_host (port 0 picks a free port; see `port`)."""
        if self._port is not None:
            raise RuntimeError("FaultProxy.start() called twice")
        self._server = await asyncio.start_server(self._accept, self.listen_host, self._listen_port)
        self._port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening, abort every relayed connection and wait until all are closed."""
        if self._stopped:
            return
        self._stopped = True
        servers = [*self._old_servers, *([self._server] if self._server else [])]
        self._server = None
        for server in servers:
            server.close()
        for link in self._links:
            link.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Tasks cancelled before their first step never ran their cleanup.
        for link in list(self._links):
            await link.wait_closed()
        self._links.clear()
        for server in servers:
            await server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def pause(self, *, drop_connections: bool = False) -> None:
        """Close the listening socket, so connecting is refused (a node that is down).

        Relayed connections carry on unless `drop_connections` is true, which aborts them
        and returns once they are closed (raising TimeoutError if that takes over `timeout`).
        """
        if self._server is not None:
            self._server.close()
            self._old_servers.append(self._server)
            self._server = None
        if drop_connections:
            for link in self._links:
                link.abort()
            # Aborted links end their tasks promptly; those tasks close and forget the links.
            async with asyncio.timeout(self._timeout):
                await asyncio.gather(*self._tasks)

    async def resume(self) -> None:
        """Listen again on the same port after pause()."""
        if self._port is None or self._stopped:
            raise RuntimeError("FaultProxy.resume() needs a started, not stopped, proxy")
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, self.listen_host, self._port)

    def partition(self) -> None:
        """Stall every connection, open and new, without closing any (a network cut).

        Connections are still accepted but not relayed, and bytes already in flight wait in
        the proxy; nothing is closed, so each side sees only silence until its own timeout.
        """
        self._flowing.clear()

    def heal(self) -> None:
        """End a partition: held bytes and waiting connections go on, as TCP's would."""
        self._flowing.set()

    # State

    @property
    def partitioned(self) -> bool:
        """True between partition() and heal()."""
        return not self._flowing.is_set()

    @property
    def port(self) -> int:
        """The listening port (fixed at start(), kept across pause() and resume())."""
        if self._port is None:
            raise RuntimeError("FaultProxy is not started")
        return self._port

    @property
    def address(self) -> str:
        """The listening address as "host:port" ("[host]:port" for IPv6)."""
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{host}:{self.port}"

    @property
    def paused(self) -> bool:
        """True while the proxy is started but not listening."""
        return self._port is not None and self._server is None and not self._stopped

    @property
    def connections(self) -> int:
        """How many client connections are open now."""
        return len(self._links)

    @property
    def fired(self) -> int:
        """How many cuts have been made so far, by all rules."""
        return self._fired

    # Rules

    def cut(
        self,
        direction: Direction | Literal["client", "server"],
        pattern: bytes | re.Pattern[bytes],
        *,
        when: When | Literal["before", "after"] = When.BEFORE,
        occurrence: int = 1,
        times: int = 1,
    ) -> Cut:
        """Add a rule: cut the connection at the `occurrence`-th line that matches, `times` times.

        Lines flowing in `direction` are searched (re.search, line ending stripped) with
        `pattern`.  Matches count over all connections; from the `occurrence`-th one on, each
        match aborts both sides of its connection, before or after forwarding the line, until
        the rule has fired `times` times.  Rules are tried in the order they were added, and
        the first that fires decides.
        """
        if occurrence < 1 or times < 1:
            raise ValueError(f"occurrence and times must be >= 1, not {occurrence} and {times}")
        rule = Cut(
            direction=Direction(direction),
            pattern=re.compile(pattern) if isinstance(pattern, bytes) else pattern,
            when=When(when),
            occurrence=occurrence,
            times=times,
        )
        self._rules.append(rule)
        return rule

    async def wait_fired(self, n: int, within: float) -> None:
        """Return once `n` cuts have been made in all; raise TimeoutError after `within` s."""
        try:
            async with asyncio.timeout(within):
                while self._fired < n:
                    await self._fired_event.wait()
        except TimeoutError:
            raise TimeoutError(
                f"FaultProxy {self.address}: {self._fired} of {n} cuts made within {within}s"
            ) from None

    def _match(self, direction: Direction, line: bytes) -> Cut | None:
        content = line.rstrip(b"\r\n")
        for rule in self._rules:
            if rule.direction is not direction or rule.retired:
                continue
            if rule.pattern.search(content) is None:
                continue
            rule.matches += 1
            if rule.matches >= rule.occurrence:
                rule.fired += 1
                return rule
        return None

    # Relaying

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._stopped:
            writer.transport.abort()
            return
        link = _Link(client=writer)
        self._links.add(link)
        name = f"faultproxy {self.address} connection {next(self._serial)}"
        task = asyncio.get_running_loop().create_task(
            self._serve(link, reader, name, refuse=self.refuse), name=name
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(
        self, link: _Link, reader: asyncio.StreamReader, name: str, *, refuse: bool
    ) -> None:
        try:
            if refuse:
                link.abort()
                return
            await self._flowing.wait()  # a partitioned connection is held, never refused
            async with asyncio.timeout(self._timeout):
                target_reader, link.target = await asyncio.open_connection(
                    self.target_host,
                    self.target_port,
                    local_addr=(self.source_host, 0) if self.source_host else None,
                )
            async with asyncio.TaskGroup() as group:
                group.create_task(
                    self._pump(link, Direction.CLIENT, reader, link.target), name=f"{name} client"
                )
                group.create_task(
                    self._pump(link, Direction.SERVER, target_reader, link.client),
                    name=f"{name} server",
                )
        except (OSError, TimeoutError) as exc:
            log.warning(
                "faultproxy=%s target=%s:%s connect failed: %r",
                self.address,
                self.target_host,
                self.target_port,
                exc,
            )
            link.abort()
        except Exception:  # task boundary: log and drop this connection, keep serving others
            log.exception("faultproxy=%s relay failed", self.address)
            link.abort()
        finally:
            link.close()
            await link.wait_closed()
            self._links.discard(link)

    async def _pump(
        self,
        link: _Link,
        direction: Direction,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        """Relay one direction until end of stream (passed on as EOF) or a cut."""
        lines = _LineBuffer()
        try:
            while not link.cut:
                data = await reader.read(_READ_SIZE)
                await self._flowing.wait()
                if link.cut:
                    return
                if not data:
                    await self._forward(link, direction, writer, lines.finish())
                    if not link.cut and writer.can_write_eof():
                        writer.write_eof()
                    return
                if link.raw:
                    writer.write(lines.take() + data)
                else:
                    await self._forward(link, direction, writer, lines.feed(data))
                    if link.raw:  # STARTTLS was accepted: what is held is TLS, not a line
                        writer.write(lines.take())
                if not link.cut:
                    await writer.drain()
        except OSError as exc:
            # One side reset or vanished: the other side sees an abrupt end as well.
            log.debug("faultproxy=%s %s side ended: %r", self.address, direction, exc)
            link.abort()

    async def _forward(
        self,
        link: _Link,
        direction: Direction,
        writer: asyncio.StreamWriter,
        chunks: list[_Chunk],
    ) -> None:
        out = bytearray()
        for chunk in chunks:
            if link.cut:  # the other direction cut the link meanwhile: no further bytes
                return
            if link.raw or not chunk.whole:
                out += chunk.data
                continue
            rule = self._match(direction, chunk.data)
            if rule is not None:
                if out:
                    writer.write(out)
                await self._cut(link, direction, writer, chunk.data, rule)
                return
            out += chunk.data
            self._note_starttls(link, direction, chunk.data)
        if out:
            writer.write(out)

    @staticmethod
    def _note_starttls(link: _Link, direction: Direction, line: bytes) -> None:
        if direction is Direction.CLIENT:
            if line.rstrip(b"\r\n").upper() == b"STARTTLS":
                link.starttls_asked = True
        elif link.starttls_asked and line[3:4] != b"-":  # the last line of the reply
            link.starttls_asked = False
            link.raw = line.startswith(b"220")

    async def _cut(
        self,
        link: _Link,
        direction: Direction,
        writer: asyncio.StreamWriter,
        line: bytes,
        rule: Cut,
    ) -> None:
        link.cut = True
        if rule.when is When.AFTER:
            writer.write(line)
        # What was forwarded reaches the kernel first, as a process that dies after write()
        # would have sent it.  A peer that stalls or is gone does not delay the cut further.
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(self._timeout):
                writer.transport.set_write_buffer_limits(high=0)
                await writer.drain()
        link.abort()
        log.info(
            "faultproxy=%s cut %s %s line client=%s line=%r pattern=%r",
            self.address,
            rule.when,
            direction,
            link.client.get_extra_info("peername"),
            line,
            rule.pattern.pattern,
        )
        self._fired += 1
        self._fired_event.set()
        self._fired_event = asyncio.Event()
