"""Fuzzed SMTP sessions over real sockets: the node never breaks, whatever clients do.

Hypothesis drives clients at one node: random and malformed command lines, long and binary
lines, bare CR/LF and NUL in DATA, pipelined floods, clients that stall, half-close or
vanish (FIN or RST) at any step, DATA cut short. Each reply must have a code of the right
class for what was sent; a stall must end in 421 within the timeouts. At the end: the node
still takes mail, holds no session, logged no traceback or error, committed no partial
message, and delivered every message it answered 250 (and only messages sent whole).

HUBD_FUZZ_EXAMPLES sets the number of sessions (default 500, about a minute).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hubd.config import parse_config
from hubd.node import Node
from hubd.testing import free_loopback_address, maildir_messages, wait_until
from tests.conftest import merge, node_settings

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("HUBD_FUZZ_EXAMPLES", "500"))
IDLE = 0.4  # the node's idle_timeout, seconds (short: every stall costs this much)
READ = IDLE + 9.5  # how long a client waits for any reply: far past every timeout
MAX_LINE = 1001
MAX_SIZE = 20_000
_REPLY_LINE = re.compile(rb"([2-5]\d\d)([ -])")
T = TypeVar("T")

# What each verb may answer (RFC 5321 4.3.2 and hubd's own); 421 (then the server closes)
# and 500 5.5.2 Line too long are allowed for any line.
SANE: dict[bytes, set[int]] = {
    b"HELO": {250, 501},
    b"EHLO": {250, 501},
    b"MAIL": {250, 501, 503, 552, 553, 555},
    b"RCPT": {250, 452, 501, 503, 550, 553, 555},
    b"DATA": {354, 501, 503},
    b"RSET": {250, 501},
    b"NOOP": {250},
    b"QUIT": {221, 501},
    b"VRFY": {252, 501, 553, 555},
    b"HELP": {214, 504},
    b"AUTH": {503},
    b"STARTTLS": {502},
    b"EXPN": {502},
    b"XSHADOW": {250, 501, 503, 550},
    b"XQDISCARD": {250, 501, 503},
    b"XQTAKEN": {250, 501, 503},
}
UNKNOWN = {500, 502}
CLOSING = {221, 421, 502}


class Closed(Exception):
    """The server closed the connection (FIN or RST)."""


@dataclass
class Record:
    """What the clients did, for the checks after the last session."""

    acked: set[str] = field(default_factory=set)  # got 250 at the end of DATA
    maybe: set[str] = field(default_factory=set)  # sent whole, reply never read
    sent: dict[str, bytes] = field(default_factory=dict)  # token -> content as sent
    sessions: int = 0
    by_ending: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


class NodeThread:
    """A node in its own thread and event loop, so the fuzzing clients can block."""

    def __init__(self, tmp_path: Path) -> None:
        host, _ = free_loopback_address()
        config = parse_config(
            merge(
                node_settings(tmp_path / "fuzz", "fuzz", host),
                {
                    "local_domains": ["corp.test"],
                    "smtp": {
                        "trusted_networks": ["127.0.0.1/32"],
                        "idle_timeout": f"{int(IDLE * 1000)}ms",
                        "data_timeout": "5s",
                        "max_line_length": MAX_LINE,
                        "max_message_size": MAX_SIZE,
                        "max_header_size": "4KiB",
                        "max_received_headers": 5,
                        "max_recipients": 5,
                        "max_errors": 20,
                        "max_commands_per_session": 200,
                        "max_connections_per_client": 5,
                        "max_messages_per_minute_per_client": 30,
                    },
                    "shadow": {"peers": ["127.0.0.0/8"]},
                },
            )
        )
        self.node = Node(config)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fuzz-node")

    def start(self) -> None:
        self._thread.start()
        self.call(self.node.start())

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout=60)

    def live_sessions(self) -> int:
        async def count() -> int:
            assert self.node._inbound is not None
            return len(self.node._inbound.live)

        return self.call(count())

    def stop(self) -> None:
        self.call(self.node.stop(grace=5))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()


class Faults(logging.Handler):
    """Collects every log record that is an error or carries a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.levelno >= logging.ERROR:
            self.records.append(record)


@pytest.fixture
def fuzz_node(tmp_path: Path) -> Iterator[NodeThread]:
    node = NodeThread(tmp_path)
    node.start()
    try:
        yield node
    finally:
        node.stop()


class Wire:
    """A blocking client socket that reads whole replies."""

    def __init__(self, address: tuple[str, int], source: str) -> None:
        self.sock = socket.create_connection(address, timeout=READ, source_address=(source, 0))
        # Each write goes out at once (no Nagle wait for an ACK): cuts land where drawn.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = b""

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:  # the server already closed: what it said is still readable
            raise Closed("closed by the server") from None

    def reply(self) -> tuple[int, list[bytes]]:
        """One reply: its code and lines; every line must be well formed."""
        lines: list[bytes] = []
        while True:
            line = self._line()
            match = _REPLY_LINE.match(line)
            assert match is not None, f"malformed reply line {line!r} after {lines!r}"
            lines.append(line)
            if match[2] == b" ":
                codes = {entry[:3] for entry in lines}
                assert len(codes) == 1, f"mixed codes in one reply: {lines!r}"
                return int(match[1]), lines

    def _line(self) -> bytes:
        while b"\r\n" not in self._buffer:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                raise Closed("reset by the server") from None
            except TimeoutError:
                raise AssertionError(f"no reply within {READ}s") from None
            if not chunk:
                raise Closed("closed by the server")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\r\n", 1)
        return line

    def expect_close(self) -> None:
        """The server must close the connection (it may say nothing more first)."""
        try:
            while True:
                self._line()
        except Closed:
            return

    def vanish(self, reset: bool) -> None:
        if reset:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        self.sock.close()


# Command lines.
GOOD = [
    b"EHLO client.test",
    b"HELO client.test",
    b"MAIL FROM:<a@outside.test>",
    b"MAIL FROM:<>",
    b"MAIL FROM:<a@outside.test> SIZE=100 BODY=8BITMIME",
    b"MAIL FROM:<\xc3\xa4@outside.test> SMTPUTF8",
    b"MAIL FROM:<a@up.test> XORIGIN={origin}",
    b"RCPT TO:<bob@corp.test>",
    b"RCPT TO:<carol@corp.test> NOTIFY=FAILURE",
    b"RCPT TO:<x@elsewhere.test>",
    b"RSET",
    b"NOOP",
    b"VRFY bob",
    b"HELP",
    b"XSHADOW up-1 0123456789abcdef",
    b"XQDISCARD 10",
    b"XQDISCARD 5 ACK=1",
    b"XQTAKEN Q1 Q2",
]
MANGLED = [
    b'MAIL FROM:"',
    b'RCPT TO:"',
    b'VRFY "',
    b"MAIL FROM:<",
    b"MAIL FROM:<a@b>junk",
    b"MAIL FROM:<\xff\xfe@x.test>",
    b"MAIL FROM:<\xc3\xa4@outside.test>",
    b"MAIL FROM:<a@outside.test> SIZE=99999999",
    b"MAIL FROM:<a@outside.test> FROB=1",
    b"MAIL FROM:<a@outside.test> XORIGIN=bad",
    b"RCPT TO:<>",
    b"RCPT TO:<b\x00b@corp.test>",
    b"HELO evil\rX-Injected: yes",
    b"HELO \xff\xfe",
    b"EHLO",
    b"AUTH PLAIN AGFsaWNlAHNlY3JldA==",
    b"STARTTLS",
    b"EXPN staff",
    b"QUIT now",
    b"DATA now",
    b"XSHADOW up-1",
    b"XQDISCARD ten",
    b"BOGUS",
    b"GET / HTTP/1.1",
    b"",
    b"\x00\x01\x02",
]


@st.composite
def command_line(draw: st.DrawFn) -> bytes:
    """One line without its line end; never the DATA verb (the runner sends DATA itself)."""
    kind = draw(st.integers(0, 9))
    if kind <= 4:
        return draw(st.sampled_from(GOOD))
    if kind <= 7:
        return draw(st.sampled_from(MANGLED))
    if kind == 8:
        return b"NOOP " + b"x" * draw(st.integers(400, 30_000))
    raw = draw(st.binary(max_size=60)).replace(b"\n", b"")
    return raw if not raw.upper().startswith(b"DATA") else b"NOOP"


TRANSACTION = (
    b"EHLO client.test",
    b"MAIL FROM:<a@outside.test>",
    b"RCPT TO:<bob@corp.test>",
    b"DATA",
)
FAULTS = ["binary", "lf", "cr", "nul", "long", "big", "hops", "header"]


def verb_of(line: bytes) -> bytes:
    return line.split(b" ", 1)[0].strip(b"\r").upper()


def allowed(line: bytes) -> set[int]:
    return SANE.get(verb_of(line), UNKNOWN) | {421, 500}


TOKEN = b"fz-XXXXXX-XX"  # a placeholder of the token's width, so cut points stay valid


@dataclass(frozen=True)
class Vanish:
    reset: bool  # RST rather than FIN


@dataclass(frozen=True)
class Stall:
    half_line: bool


@dataclass(frozen=True)
class HalfClose:
    pass


@dataclass(frozen=True)
class Lines:
    lines: tuple[bytes, ...]  # one line alone, or a pipelined flood
    end: bytes = b"\r\n"


@dataclass(frozen=True)
class Transaction:
    content: bytes  # with TOKEN in it
    expected: int  # the reply its first fault (or none) must get
    how: str  # "whole", "vanish-cut", "stall-cut", "vanish-after-dot"
    cuts: tuple[int, ...]  # where the stream is split into writes (or cut short)
    reset: bool


Step = Vanish | Stall | HalfClose | Lines | Transaction


@st.composite
def messages(draw: st.DrawFn) -> tuple[bytes, int]:
    """Content ending in CRLF, and the code its first fault (if any) must get."""
    body = b"".join(
        f"line {n} {'y' * y}\r\n".encode()
        for n, y in enumerate(draw(st.lists(st.integers(0, 90), max_size=12)))
    )
    content = b"Subject: " + TOKEN + b"\r\n\r\n" + body
    end = b"END " + TOKEN + b"\r\n"
    fault = draw(st.sampled_from([*["none"] * 4, *FAULTS]))
    if fault == "binary":
        raw = draw(st.binary(max_size=300))
        clean = raw.replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", b"")
        return content + clean + b"\r\n" + end, 250
    if fault == "hops":
        return b"Received: x\r\n" * 6 + content + end, 554
    if fault == "header":
        return b"X-Big: x\r\n" + b" folded\r\n" * 600 + content + end, 552
    inserted, code = {
        "none": (b"", 250),
        "lf": (b"bare\nlf\r\n", 550),
        "cr": (b"bare\rcr\r\n", 550),
        "nul": (b"nul\x00here\r\n", 550),
        "long": (b"z" * (MAX_LINE + 5) + b"\r\n", 500),
        "big": ((b"b" * 98 + b"\r\n") * (MAX_SIZE // 100 + 5), 552),
    }[fault]
    return content + inserted + end, code


@st.composite
def transactions(draw: st.DrawFn) -> Transaction:
    content, expected = draw(messages())
    length = len(stuff(content))
    how = draw(
        st.sampled_from(
            [
                *["whole"] * 52,
                *["vanish-cut"] * 4,
                "stall-cut",
                "vanish-after-dot",
                "vanish-after-dot",
            ]
        )
    )
    cuts = tuple(sorted(draw(st.lists(st.integers(0, length - 1), min_size=1, max_size=6))))
    return Transaction(content, expected, how, cuts, draw(st.booleans()))


ORDINARY: st.SearchStrategy[Step] = st.one_of(
    st.builds(Lines, st.lists(command_line(), min_size=2, max_size=40).map(tuple)),
    transactions(),
    transactions(),
    st.builds(
        Lines,
        command_line().map(lambda line: (line,)),
        st.sampled_from([b"\r\n", b"\r\n", b"\n"]),
    ),
    st.builds(Lines, command_line().map(lambda line: (line,))),
)
# How a session ends when its steps run out: mostly QUIT. Stalls cost an idle timeout each.
ENDINGS: st.SearchStrategy[Step | None] = st.sampled_from(
    [None] * 16 + [Stall(False), Stall(True), Vanish(False), Vanish(True), HalfClose()]
)
SCRIPTS = st.tuples(st.lists(ORDINARY, max_size=12), ENDINGS).map(
    lambda parts: [*parts[0], *([parts[1]] if parts[1] is not None else [])]
)


CLIENTS = st.integers(2, 31).map(lambda n: f"127.100.0.{n}") | st.integers(0, 999).map(
    lambda n: f"127.101.{n // 250}.{n % 250 + 2}"
)


class Runner:
    """Plays one drawn script as a client; what the server says decides only what is read."""

    def __init__(self, node: NodeThread, record: Record, serial: int, source: str) -> None:
        self.record = record
        self.serial = serial
        self.counter = itertools.count()
        address = node.node.relay_addresses[0]
        self.wire = Wire((address.host, address.port), source)

    def run(self, script: list[Step]) -> str:
        """Play the session; how it ended."""
        try:
            code, _ = self.wire.reply()
            if code != 220:
                assert code == 421, code
                self.wire.expect_close()
                return "refused"
            for step in script:
                ending = self.step(step)
                if ending:
                    return ending
            self.wire.send(b"QUIT\r\n")
            code, lines = self.wire.reply()
            assert code in (221, 421), lines
            self.wire.expect_close()
            return "quit"
        except Closed as closed:
            return str(closed)
        finally:
            self.wire.close()

    def line(self, line: bytes) -> bytes:
        origin = f"fz.0123456789abcdef.O{self.serial}x{next(self.counter)}"
        return line.replace(b"{origin}", origin.encode())

    def check(self, sent: bytes, code: int, lines: list[bytes]) -> None:
        assert code in allowed(sent), (sent, lines)
        if code in CLOSING and not (code == 502 and verb_of(sent) in SANE):
            self.wire.expect_close()
            raise Closed(f"closed after {code}")

    def step(self, step: Step) -> str | None:
        if isinstance(step, Vanish):
            self.wire.vanish(step.reset)
            return "vanished"
        if isinstance(step, Stall):
            if step.half_line:
                self.wire.send(b"NOOP")
            self.stalled()
            return "stalled"
        if isinstance(step, HalfClose):
            self.wire.sock.shutdown(socket.SHUT_WR)
            self.wire.expect_close()
            return "half-closed"
        if isinstance(step, Lines):
            sent = [self.line(line) for line in step.lines]
            self.wire.send(b"".join(line + step.end for line in sent))
            for line in sent:
                self.check(line, *self.wire.reply())
            return None
        self.transaction(step)
        return None

    def stalled(self) -> None:
        """The server must hang up, with 421, once its idle timeout passes."""
        code, lines = self.wire.reply()
        assert code == 421, lines
        self.wire.expect_close()

    def transaction(self, step: Transaction) -> None:
        """MAIL, RCPT, DATA, then the message, whole or not."""
        for sent in TRANSACTION:
            self.wire.send(sent + b"\r\n")
            code, lines = self.wire.reply()
            self.check(sent, code, lines)
            if code >= 400:
                return  # a limit or a refused step: no message this time
        token = f"fz-{self.serial:06d}-{next(self.counter):02d}"
        content = step.content.replace(TOKEN, token.encode())
        stream = stuff(content)
        if step.how in ("vanish-cut", "stall-cut"):
            self.wire.send(stream[: step.cuts[0]])
            if step.how == "stall-cut":
                self.stalled()
            else:
                self.wire.vanish(step.reset)
            raise Closed(step.how)
        for a, b in itertools.pairwise([0, *step.cuts, len(stream)]):
            self.wire.send(stream[a:b])
        self.record.sent[token] = content
        if step.how == "vanish-after-dot":
            self.record.maybe.add(token)
            self.wire.vanish(reset=False)
            raise Closed(step.how)
        code, lines = self.wire.reply()
        if code == 421:
            self.wire.expect_close()
            raise Closed("421 after DATA")
        assert code == step.expected, (token, step.expected, lines)
        if code == 250:
            self.record.acked.add(token)


def stuff(content: bytes) -> bytes:
    """The DATA stream for a CRLF content: leading dots doubled, then the end."""
    return re.sub(rb"(?m)^\.", b"..", content) + b".\r\n"


# About 0.12 s a session on an idle machine; a loaded one may take several times that.
@pytest.mark.timeout(max(300, EXAMPLES))
def test_fuzzed_sessions(fuzz_node: NodeThread) -> None:
    """Hypothesis-driven clients at one node: it survives all, and loses or halves nothing."""
    record = Record()
    faults = Faults()
    logging.getLogger().addHandler(faults)
    serials = itertools.count()
    try:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        # Half the sessions come from thirty busy addresses, where per-client limits come
        # into play; the rest from a thousand quiet ones, so long runs still get deep.
        @given(CLIENTS, SCRIPTS)
        def one_session(client: str, script: list[Step]) -> None:
            serial = next(serials)
            started = time.monotonic()
            runner = Runner(fuzz_node, record, serial, client)
            ending = runner.run(script)
            record.seconds[ending] = record.seconds.get(ending, 0.0) + time.monotonic() - started
            record.sessions += 1
            record.by_ending[ending] = record.by_ending.get(ending, 0) + 1

        one_session()
        # The node still takes mail, from a clean client.
        wire = Wire(
            (fuzz_node.node.relay_addresses[0].host, fuzz_node.node.relay_addresses[0].port),
            free_loopback_address()[0],
        )
        assert wire.reply()[0] == 220
        for sent in TRANSACTION:
            wire.send(sent + b"\r\n")
            assert wire.reply()[0] in (250, 354)
        wire.send(b"Subject: fz-final\r\n\r\nEND fz-final\r\n.\r\n")
        assert wire.reply()[0] == 250
        record.acked.add("fz-final")
        record.sent["fz-final"] = b"Subject: fz-final\r\n\r\nEND fz-final\r\n"
        wire.close()
        # Every session ends within its timeouts once its client is quiet or gone.
        wait_until(lambda: fuzz_node.live_sessions() == 0, 2 * READ, "every session to end")
    finally:
        logging.getLogger().removeHandler(faults)
    assert not faults.records, [r.getMessage() for r in faults.records[:5]]
    delivered = wait_until(
        lambda: _delivered_covers(fuzz_node, record), 60, "delivery of every 250"
    )
    for token, data in delivered.items():
        assert token in record.acked | record.maybe, f"{token} was never sent whole"
        assert data.endswith(record.sent[token]), f"{token} is not the message sent"
    print(
        f"fuzz: {record.sessions} sessions, endings {record.by_ending}, "
        f"seconds { ({k: round(v, 1) for k, v in record.seconds.items()}) }, "
        f"{len(record.acked)} acked, {len(delivered)} delivered"
    )


def _delivered_covers(node: NodeThread, record: Record) -> dict[str, bytes] | None:
    found: dict[str, bytes] = {}
    for data in maildir_messages(node.node.config.mailbox_dir).values():
        match = re.search(rb"^Subject: (fz-[\w-]+)\r\n", data, re.MULTILINE)
        assert match is not None, data[:200]
        found[match[1].decode()] = data
    return found if record.acked <= set(found) else None
