"""FaultProxy: relays bytes unchanged, cuts at matching lines, refuses, pauses, partitions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from hubd.testing.faultproxy import Direction, FaultProxy, When, _LineBuffer

WITHIN = 5.0


@dataclass(eq=False)
class Session:
    """What the target saw on one connection."""

    peer: tuple[str, int]
    lines: list[bytes] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)


class LineServer:
    """A tiny SMTP-like target: greets, answers "250 ok <line>", "221" to QUIT.

    After "STARTTLS" it answers 220 and then echoes raw bytes, as TLS would need.
    """

    def __init__(self) -> None:
        self.sessions: list[Session] = []
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        await self._server.wait_closed()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = Session(peer=writer.get_extra_info("peername"))
        self.sessions.append(session)
        self._writers.append(writer)
        self._tasks.append(asyncio.create_task(self._serve(session, reader, writer)))

    async def _serve(
        self, session: Session, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            writer.write(b"220 target ready\r\n")
            while line := await reader.readline():
                session.lines.append(line)
                command = line.rstrip(b"\r\n")
                if command == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    break
                if command == b"STARTTLS":
                    writer.write(b"220 go ahead\r\n")
                    while data := await reader.read(1024):
                        writer.write(data)
                    break
                writer.write(b"250 ok " + command + b"\r\n")
                await writer.drain()
            writer.close()
        except OSError:
            writer.transport.abort()
        finally:
            session.done.set()

    async def session_ended(self, index: int = -1) -> Session:
        """Wait until the target's session `index` has ended, and return it."""
        session = self.sessions[index]
        async with asyncio.timeout(WITHIN):
            await session.done.wait()
        return session


class Client:
    """A test client connected to the proxy."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def line(self) -> bytes:
        async with asyncio.timeout(WITHIN):
            return await self.reader.readline()

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def ask(self, command: bytes) -> bytes:
        await self.send(command + b"\r\n")
        return await self.line()

    async def rest(self) -> bytes:
        """Everything until the connection ends (EOF or reset: either is an abrupt end here)."""
        chunks: list[bytes] = []
        with contextlib.suppress(ConnectionResetError):
            async with asyncio.timeout(WITHIN):
                while chunk := await self.reader.read(65536):
                    chunks.append(chunk)
        return b"".join(chunks)


@pytest.fixture
async def target() -> AsyncIterator[LineServer]:
    server = LineServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def proxy(target: LineServer) -> AsyncIterator[FaultProxy]:
    async with FaultProxy("127.0.0.1", "127.0.0.1", target.port) as running:
        yield running


@contextlib.asynccontextmanager
async def connect(proxy: FaultProxy) -> AsyncIterator[Client]:
    async with asyncio.timeout(WITHIN):
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        yield Client(reader, writer)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def proxy_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("faultproxy")]


class TestLineBuffer:
    @pytest.mark.parametrize(
        ("reads", "expected", "tail"),
        [
            ([b"HELO a\r\n"], [(b"HELO a\r\n", True)], b""),
            ([b"HE", b"LO a\r", b"\n"], [(b"HELO a\r\n", True)], b""),
            ([b"a\r\nb\r\nc"], [(b"a\r\n", True), (b"b\r\n", True)], b"c"),
            ([b"bare\nlf\n"], [(b"bare\n", True), (b"lf\n", True)], b""),
            ([b"x" * 70000, b"yz\r\nok\r\n"], [(b"x" * 70000, False), (b"yz\r\n", False)], b""),
        ],
        ids=["one-line", "split-across-reads", "partial-tail", "bare-lf", "overlong"],
    )
    def test_feed(
        self, reads: list[bytes], expected: list[tuple[bytes, bool]], tail: bytes
    ) -> None:
        """Complete lines come out whole and examinable; an overlong one does not."""
        buffer = _LineBuffer()
        chunks = [chunk for data in reads for chunk in buffer.feed(data)]
        assert [(c.data, c.whole) for c in chunks][: len(expected)] == expected
        assert b"".join(c.data for c in buffer.finish()) == tail

    def test_overlong_then_normal(self) -> None:
        """After an overlong line ends, the next line is examinable again."""
        buffer = _LineBuffer()
        buffer.feed(b"x" * 70000)
        chunks = buffer.feed(b"end\r\nnext\r\n")
        assert [(c.data, c.whole) for c in chunks] == [(b"end\r\n", False), (b"next\r\n", True)]


class TestRelay:
    async def test_bytes_pass_unchanged(self, proxy: FaultProxy, target: LineServer) -> None:
        """Lines go both ways unchanged, whatever the read boundaries."""
        async with connect(proxy) as client:
            assert await client.line() == b"220 target ready\r\n"
            assert await client.ask(b"EHLO a.test") == b"250 ok EHLO a.test\r\n"
            await client.send(b"MAIL FROM:<a@")
            await client.send(b"a.test>\r")
            await client.send(b"\nRCPT TO:<b@b.test>\r\nDA")
            assert await client.line() == b"250 ok MAIL FROM:<a@a.test>\r\n"
            assert await client.line() == b"250 ok RCPT TO:<b@b.test>\r\n"
            body = b"\xff\x00 binary-ish " * 1000
            await client.send(b"TA\r\n" + body + b"\r\nQUIT\r\n")
            assert await client.line() == b"250 ok DATA\r\n"
            assert await client.line() == b"250 ok " + body + b"\r\n"
            assert await client.rest() == b"221 bye\r\n"
        session = await target.session_ended()
        assert session.lines[-1] == b"QUIT\r\n"

    async def test_final_partial_line_is_forwarded(
        self, proxy: FaultProxy, target: LineServer
    ) -> None:
        """A last line without CRLF reaches the target at EOF, and the reply comes back."""
        async with connect(proxy) as client:
            await client.line()
            await client.send(b"tail without crlf")
            client.writer.write_eof()
            assert await client.rest() == b"250 ok tail without crlf\r\n"
        assert (await target.session_ended()).lines == [b"tail without crlf"]

    async def test_source_host(self, target: LineServer) -> None:
        """The outbound connection comes from source_host."""
        async with (
            FaultProxy("127.0.0.1", "127.0.0.1", target.port, source_host="127.0.0.3") as proxy,
            connect(proxy) as client,
        ):
            await client.line()
        assert target.sessions[0].peer[0] == "127.0.0.3"

    async def test_starttls_switches_to_raw(self, proxy: FaultProxy) -> None:
        """After 220 to STARTTLS, bytes without line ends are relayed at once."""
        proxy.cut("client", rb"\x16")
        async with connect(proxy) as client:
            await client.line()
            assert await client.ask(b"STARTTLS") == b"220 go ahead\r\n"
            await client.send(b"\x16\x03\x01 hello")
            async with asyncio.timeout(WITHIN):
                assert await client.reader.readexactly(9) == b"\x16\x03\x01 hello"
        assert proxy.fired == 0

    async def test_target_down(self, target: LineServer) -> None:
        """A client whose target refuses sees its connection close."""
        port = target.port
        await target.stop()
        async with (
            FaultProxy("127.0.0.1", "127.0.0.1", port) as proxy,
            connect(proxy) as client,
        ):
            assert await client.rest() == b""


class TestCut:
    async def test_server_before(self, proxy: FaultProxy, target: LineServer) -> None:
        """A "before" cut on replies: the client never sees the matching reply, only the end."""
        rule = proxy.cut(Direction.SERVER, rb"^250 ok two")
        async with connect(proxy) as client:
            await client.line()
            assert await client.ask(b"one") == b"250 ok one\r\n"
            await client.send(b"two\r\n")
            assert await client.rest() == b""
        await proxy.wait_fired(1, within=WITHIN)
        assert (rule.matches, rule.fired, rule.retired) == (1, 1, True)
        assert (await target.session_ended()).lines == [b"one\r\n", b"two\r\n"]

    async def test_server_after(self, proxy: FaultProxy) -> None:
        """An "after" cut on replies: the client gets the matching reply, then the end."""
        proxy.cut("server", rb"^250 ok two", when="after")
        async with connect(proxy) as client:
            await client.line()
            await client.send(b"two\r\n")
            assert await client.rest() == b"250 ok two\r\n"
        assert proxy.fired == 1

    async def test_client_before(self, proxy: FaultProxy, target: LineServer) -> None:
        """A "before" cut on commands: the target never sees the matching command."""
        proxy.cut("client", rb"^DATA$", when=When.BEFORE)
        async with connect(proxy) as client:
            await client.line()
            assert await client.ask(b"RCPT") == b"250 ok RCPT\r\n"
            await client.send(b"DATA\r\nQUIT\r\n")
            assert await client.rest() == b""
        assert (await target.session_ended()).lines == [b"RCPT\r\n"]

    async def test_client_after(self, proxy: FaultProxy, target: LineServer) -> None:
        """An "after" cut on commands: the target gets the command, its reply is lost."""
        proxy.cut("client", rb"^DATA$", when="after")
        async with connect(proxy) as client:
            await client.line()
            await client.send(b"DATA\r\n")
            assert await client.rest() == b""
        assert (await target.session_ended()).lines == [b"DATA\r\n"]

    async def test_occurrence_and_times(self, proxy: FaultProxy) -> None:
        """Matches count across connections; the rule fires from the 2nd match, twice."""
        rule = proxy.cut("server", rb"^250 ok x$", occurrence=2, times=2)
        async with connect(proxy) as client:
            await client.line()
            assert await client.ask(b"x") == b"250 ok x\r\n"
            await client.send(b"x\r\n")
            assert await client.rest() == b""
        async with connect(proxy) as client:
            await client.line()
            await client.send(b"x\r\n")
            assert await client.rest() == b""
        async with connect(proxy) as client:
            await client.line()
            assert await client.ask(b"x") == b"250 ok x\r\n"
            assert await client.ask(b"x") == b"250 ok x\r\n"
        assert (rule.matches, rule.fired, proxy.fired) == (3, 2, 2)

    async def test_first_rule_decides(self, proxy: FaultProxy) -> None:
        """Rules are tried in order; the first that fires cuts, later ones see nothing."""
        first = proxy.cut("server", rb"^250", when="after")
        second = proxy.cut("server", rb"^250")
        async with connect(proxy) as client:
            await client.line()
            await client.send(b"x\r\n")
            assert await client.rest() == b"250 ok x\r\n"
        assert (first.fired, second.matches) == (1, 0)

    @pytest.mark.parametrize(
        ("direction", "occurrence", "times"),
        [("server", 0, 1), ("server", 1, 0), ("sideways", 1, 1)],
        ids=["occurrence-0", "times-0", "bad-direction"],
    )
    def test_bad_arguments(self, direction: str, occurrence: int, times: int) -> None:
        """Nonsense rules are refused when added."""
        proxy = FaultProxy("127.0.0.1", "127.0.0.1", 25)
        with pytest.raises(ValueError, match=r"."):
            proxy.cut(direction, b"x", occurrence=occurrence, times=times)  # type: ignore[arg-type]


class TestWaitFired:
    async def test_wakes_on_cut(self, proxy: FaultProxy) -> None:
        """A waiter started before the cut returns once it is made."""
        proxy.cut("server", rb"^250")
        waiter = asyncio.create_task(proxy.wait_fired(1, within=WITHIN))
        async with connect(proxy) as client:
            await client.line()
            await client.send(b"x\r\n")
            await waiter
            assert await client.rest() == b""

    async def test_already_reached(self, proxy: FaultProxy) -> None:
        """Waiting for zero cuts returns at once."""
        await proxy.wait_fired(0, within=0)

    async def test_timeout(self, proxy: FaultProxy) -> None:
        """Too few cuts within the time raises TimeoutError saying how many were made."""
        with pytest.raises(TimeoutError, match="0 of 1 cuts"):
            await proxy.wait_fired(1, within=0.01)


class TestRefuseAndPause:
    async def test_refuse(self, proxy: FaultProxy, target: LineServer) -> None:
        """With refuse set, connections are accepted and closed; without, they relay again."""
        proxy.refuse = True
        async with connect(proxy) as client:
            assert await client.rest() == b""
        assert target.sessions == []
        proxy.refuse = False
        async with connect(proxy) as client:
            assert await client.line() == b"220 target ready\r\n"

    async def test_pause_and_resume(self, proxy: FaultProxy) -> None:
        """Paused, connecting is refused and open links carry on; resumed, the same port works."""
        port = proxy.port
        async with connect(proxy) as early:
            await early.line()
            await proxy.pause()
            assert proxy.paused
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection("127.0.0.1", port)
            assert await early.ask(b"still") == b"250 ok still\r\n"
            await proxy.resume()
            assert (proxy.port, proxy.paused) == (port, False)
            async with connect(proxy) as late:
                assert await late.line() == b"220 target ready\r\n"

    async def test_pause_dropping_connections(self, proxy: FaultProxy) -> None:
        """pause(drop_connections=True) also ends the open links."""
        async with connect(proxy) as client:
            await client.line()
            await proxy.pause(drop_connections=True)
            assert proxy.connections == 0
            assert await client.rest() == b""


class TestPartition:
    async def test_partition_stalls_then_heal_resumes(
        self, proxy: FaultProxy, target: LineServer
    ) -> None:
        """Partitioned, open and new connections stay open, nothing passing; healed, all flow."""
        async with connect(proxy) as early:
            await early.line()
            proxy.partition()
            assert proxy.partitioned
            await early.send(b"held\r\n")
            async with connect(proxy) as late:
                silent = asyncio.ensure_future(late.reader.readline())
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.3):
                        await asyncio.shield(silent)
                assert len(target.sessions) == 1  # the new connection never reached the target
                assert proxy.connections == 2
                proxy.heal()
                assert await early.line() == b"250 ok held\r\n"
                async with asyncio.timeout(WITHIN):
                    assert await silent == b"220 target ready\r\n"


class TestStop:
    async def test_stop_ends_everything(self, target: LineServer) -> None:
        """stop() aborts open links, leaves no task behind and no longer listens."""
        proxy = FaultProxy("127.0.0.1", "127.0.0.1", target.port)
        await proxy.start()
        async with connect(proxy) as first, connect(proxy) as second:
            await first.line()
            await second.line()
            assert proxy.connections == 2
            await proxy.stop()
            assert proxy_tasks() == []
            assert proxy.connections == 0
            assert await first.rest() == b""
            assert await second.rest() == b""
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", proxy.port)
        await proxy.stop()

    async def test_stop_while_paused(self, target: LineServer) -> None:
        """A paused proxy stops cleanly too, and cannot be resumed afterwards."""
        proxy = FaultProxy("127.0.0.1", "127.0.0.1", target.port)
        await proxy.start()
        await proxy.pause()
        await proxy.stop()
        assert proxy_tasks() == []
        with pytest.raises(RuntimeError):
            await proxy.resume()
