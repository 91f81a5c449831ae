"""Bad input gets the right SMTP reply, with an enhanced code, and the session keeps working.

The client here is raw asyncio streams: smtplib and aiosmtplib would refuse or repair the
malformed bytes these tests must send. After each bad input the test proves the session (or,
where the protocol ends it, the server) still serves: a NOOP, or a whole good transaction.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest

from hubd.config import parse_config
from hubd.delivery.maildir import mailbox_dirname
from hubd.node import Node
from hubd.testing import async_wait_until, free_loopback_address, maildir_messages
from tests.conftest import NodeFactory, merge, node_settings
from tests.integration.rawsmtp import RawClient, Response

pytestmark = pytest.mark.integration

LOCAL = {"local_domains": ["corp.test"]}


@contextlib.asynccontextmanager
async def session(node: Node, *, ehlo: bool = True) -> AsyncIterator[RawClient]:
    """A raw connection to the node's relay listener, greeted and (by default) past EHLO."""
    client = await RawClient.connect(node.relay_addresses[0])
    try:
        if ehlo:
            reply = await client.command("EHLO client.test")
            assert reply.code == 250, reply
        yield client
    finally:
        await client.close()


async def expect(client: RawClient, line: str | bytes, prefix: str) -> Response:
    """Send one command and check the reply starts with `prefix` ("250 2.1.0")."""
    reply = await client.command(line)
    assert reply.line.startswith(prefix), (line, reply)
    return reply


async def still_answers(client: RawClient) -> None:
    """The session is alive and in step: NOOP gets its own 250 as the very next reply."""
    await expect(client, "NOOP", "250 2.0.0 OK")


def message(subject: str, body: str = "hello") -> bytes:
    """A small well-formed message, CRLF line ends, with the terminating dot."""
    return f"Subject: {subject}\r\nFrom: a@outside.test\r\n\r\n{body}\r\n.\r\n".encode()


async def start_data(client: RawClient, recipients: Iterable[str] = ("bob@corp.test",)) -> None:
    """MAIL, RCPT for each recipient, DATA; stops at the 354."""
    await expect(client, "MAIL FROM:<alice@outside.test>", "250 2.1.0")
    for recipient in recipients:
        await expect(client, f"RCPT TO:<{recipient}>", "250 2.1.5")
    await expect(client, "DATA", "354 ")


async def send_good(client: RawClient, subject: str = "good") -> Response:
    """A whole good transaction on `client`; returns the reply to the end of DATA."""
    await start_data(client)
    await client.send(message(subject))
    reply = await client.response()
    assert reply.line.startswith("250 2.0.0 "), reply
    assert reply.line.endswith(" queued"), reply
    return reply


async def enqueued(node: Node) -> int:
    """How many messages the node has ever committed (the durable counter)."""
    assert node.repository is not None
    return (await node.repository.stats()).get("ops:enqueue", 0)


async def assert_nothing_queued(node: Node) -> None:
    assert node.repository is not None
    assert await node.repository.list_messages() == []
    assert await enqueued(node) == 0


def mailbox(node: Node, local_part: str, domain: str = "corp.test") -> Path:
    return node.config.mailbox_dir / domain / local_part


async def delivered(node: Node, local_part: str) -> dict[Path, bytes]:
    """Wait until the local part's Maildir holds mail; return its files."""
    folder = mailbox(node, local_part)
    return await async_wait_until(lambda: maildir_messages(folder), 10, f"mail for {local_part}")


class TestEhloAndPipelining:
    async def test_ehlo_advertises_extensions(self, start_node: NodeFactory) -> None:
        """EHLO lists PIPELINING, SIZE, 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES, uncoded."""
        node = await start_node(smtp={"max_message_size": 123456})
        async with session(node, ehlo=False) as client:
            reply = await client.command("EHLO client.test")
        keywords = [line[4:] for line in reply.lines[1:]]
        for keyword in ("PIPELINING", "SIZE 123456", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"):
            assert keyword in keywords
        # RFC 2034: the EHLO reply itself carries no enhanced status codes.
        for line in reply.lines:
            assert line[:4] in ("250-", "250 "), line
            assert not re.match(r"\d\.\d{1,3}\.\d{1,3} ", line[4:]), line

    async def test_pipelined_burst(self, start_node: NodeFactory) -> None:
        """MAIL, two RCPTs and DATA sent in one write get four replies, in order, then 250."""
        node = await start_node(**LOCAL)
        async with session(node) as client:
            await client.send(
                b"MAIL FROM:<alice@outside.test>\r\n"
                b"RCPT TO:<bob@corp.test>\r\n"
                b"RCPT TO:<carol@corp.test>\r\n"
                b"DATA\r\n"
            )
            replies = [(await client.response()).line for _ in range(4)]
            assert [r[:9] for r in replies[:3]] == ["250 2.1.0", "250 2.1.5", "250 2.1.5"]
            assert replies[3].startswith("354 ")
            await client.send(message("pipelined"))
            assert (await client.response()).line.endswith(" queued")
            # A second burst on the same connection, starting with RSET.
            await client.send(b"RSET\r\nMAIL FROM:<>\r\nRCPT TO:<bob@corp.test>\r\nNOOP\r\n")
            replies = [(await client.response()).line for _ in range(4)]
            assert [r[:9] for r in replies] == ["250 2.0.0", "250 2.1.0", "250 2.1.5", "250 2.0.0"]
        for local_part in ("bob", "carol"):
            await delivered(node, local_part)


class TestCommandErrors:
    async def test_unknown_command(self, start_node: NodeFactory) -> None:
        """An unknown verb gets 500 5.5.x and the session goes on."""
        node = await start_node(**LOCAL)
        async with session(node) as client:
            await expect(client, "FROBNICATE now", "500 5.5.")
            await still_answers(client)
            await send_good(client)

    async def test_fifth_unknown_command_closes(self, start_node: NodeFactory) -> None:
        """Four unknown verbs get 500 each; the fifth gets 502 5.5.1 and the connection ends."""
        node = await start_node()
        async with session(node) as client:
            for n in range(4):
                await expect(client, f"BOGUS{n}", "500 5.5.")
            await expect(client, "BOGUS4", "502 5.5.1 ")
            assert await client.expect_closed() == b""
        async with session(node) as client:
            await still_answers(client)

    async def test_null_sender_is_not_bad(self, start_node: NodeFactory) -> None:
        """MAIL FROM:<> (a bounce) is accepted and delivered with Return-Path: <>."""
        node = await start_node(**LOCAL)
        async with session(node) as client:
            await expect(client, "MAIL FROM:<>", "250 2.1.0")
            await expect(client, "RCPT TO:<bob@corp.test>", "250 2.1.5")
            await expect(client, "DATA", "354 ")
            await client.send(message("bounce"))
            assert (await client.response()).line.endswith(" queued")
        (data,) = (await delivered(node, "bob")).values()
        assert data.startswith(b"Return-Path: <>\r\n")

    @pytest.mark.parametrize(
        ("commands", "last"),
        [
            (["MAIL FROM:<alice@outside.test>"], "503 5.5.1 "),
            (["EHLO client.test", "RCPT TO:<bob@corp.test>"], "503 5.5.1 "),
            (["EHLO client.test", "MAIL FROM:<alice@outside.test>", "DATA"], "503 5.5.1 "),
        ],
        ids=["mail-before-ehlo", "rcpt-before-mail", "data-before-rcpt"],
    )
    async def test_out_of_sequence(
        self, start_node: NodeFactory, commands: list[str], last: str
    ) -> None:
        """A command out of order gets 503 5.5.1, and the right order works afterwards."""
        node = await start_node(**LOCAL)
        async with session(node, ehlo=False) as client:
            for command in commands[:-1]:
                assert (await client.command(command)).code == 250
            await expect(client, commands[-1], last)
            await expect(client, "RSET", "250 2.0.0")
            await expect(client, "EHLO client.test", "250")
            await send_good(client)

    async def test_megabyte_command_line(self, start_node: NodeFactory) -> None:
        """A 1 MB command line gets 500 5.5.2 Line too long and the session still answers."""
        node = await start_node(**LOCAL)
        async with session(node) as client:
            await expect(
                client, b"MAIL FROM:<" + b"x" * (1 << 20) + b">", "500 5.5.2 Line too long"
            )
            await still_answers(client)
            await send_good(client)

    @pytest.mark.parametrize(
        "bad",
        ["\x00", "\x01", "\x07", "\x1b", "\x7f", "\t", "\r", "\x0b"],
        ids=["nul", "soh", "bel", "esc", "del", "tab", "bare-cr", "vt"],
    )
    async def test_control_character_in_addresses(self, start_node: NodeFactory, bad: str) -> None:
        """A control character in MAIL FROM gets 501 5.1.7, in RCPT TO 501 5.1.3."""
        node = await start_node(**LOCAL)
        async with session(node) as client:
            await expect(client, f"MAIL FROM:<ali{bad}ce@outside.test>", "501 5.1.7 ")
            await expect(client, "MAIL FROM:<alice@outside.test>", "250 2.1.0 ")
            await expect(client, f"RCPT TO:<b{bad}ob@corp.test>", "501 5.1.3 ")
            await expect(client, "RCPT TO:<bob@corp.test>", "250 2.1.5 ")
            await expect(client, "DATA", "354 ")
            await client.send(message("after-bad-address"))
            assert (await client.response()).line.endswith(" queued")
        assert await enqueued(node) == 1


class TestRecipients:
    async def test_too_many_recipients(self, start_node: NodeFactory) -> None:
        """Past max_recipients a RCPT gets 452 4.5.3; the earlier ones still get the message."""
        node = await start_node(smtp={"max_recipients": 2}, **LOCAL)
        async with session(node) as client:
            await expect(client, "MAIL FROM:<alice@outside.test>", "250 2.1.0")
            await expect(client, "RCPT TO:<one@corp.test>", "250 2.1.5")
            await expect(client, "RCPT TO:<two@corp.test>", "250 2.1.5")
            await expect(client, "RCPT TO:<three@corp.test>", "452 4.5.3 ")
            await expect(client, "DATA", "354 ")
            await client.send(message("limited"))
            assert (await client.response()).line.endswith(" queued")
        for local_part in ("one", "two"):
            (data,) = (await delivered(node, local_part)).values()
            assert b"Subject: limited" in data
        assert not mailbox(node, "three").exists()

    async def test_relay_denied_to_untrusted_client(self, start_node: NodeFactory) -> None:
        """An untrusted client gets 550 5.7.1 for an unrouted domain but may mail a local one."""
        node = await start_node(smtp={"trusted_networks": ["10.0.0.0/8"]}, **LOCAL)
        async with session(node) as client:
            await expect(client, "MAIL FROM:<alice@outside.test>", "250 2.1.0")
            await expect(client, "RCPT TO:<someone@elsewhere.test>", "550 5.7.1 ")
            await expect(client, "RCPT TO:<bob@corp.test>", "250 2.1.5")
            await expect(client, "DATA", "354 ")
            await client.send(message("local-only"))
            assert (await client.response()).line.endswith(" queued")
        assert node.repository is not None
        for queued in await node.repository.list_messages():
            assert [r.address for r in queued.recipients] == ["bob@corp.test"]

    async def test_unknown_local_recipient(self, start_node: NodeFactory) -> None:
        """With catch_all off, an unlisted local recipient gets 550 5.1.1, a listed one 250."""
        node = await start_node(
            mailboxes={"catch_all": False, "recipients": ["bob@corp.test"]}, **LOCAL
        )
        async with session(node) as client:
            await expect(client, "MAIL FROM:<alice@outside.test>", "250 2.1.0")
            await expect(client, "RCPT TO:<nobody@corp.test>", "550 5.1.1 ")
            await expect(client, "RCPT TO:<Bob@CORP.test>", "250 2.1.5")
            await still_answers(client)


class TestMessageSize:
    async def test_size_parameter_over_limit(self, start_node: NodeFactory) -> None:
        """MAIL with SIZE= above max_message_size gets 552 5.3.4; one at the limit is taken."""
        node = await start_node(smtp={"max_message_size": 2000}, **LOCAL)
        async with session(node) as client:
            await expect(client, "MAIL FROM:<alice@outside.test> SIZE=2001", "552 5.3.4 ")
            await expect(client, "MAIL FROM:<alice@outside.test> SIZE=2000", "250 2.1.0")
            await expect(client, "RSET", "250 2.0.0")
            await send_good(client)
        assert await enqueued(node) == 1

    async def test_data_over_limit(self, start_node: NodeFactory) -> None:
        """A DATA stream longer than max_message_size gets 552 5.3.4 and nothing is queued."""
        node = await start_node(smtp={"max_message_size": 2000}, **LOCAL)
        async with session(node) as client:
            await start_data(client)
            await client.send(message("big", body="\r\n".join(["y" * 900] * 3)))
            reply = await client.response()
            assert reply.line.startswith("552 5.3.4 "), reply
            await still_answers(client)
            await assert_nothing_queued(node)
            await send_good(client)


class TestDataContent:
    async def test_line_over_max_line_length(self, start_node: NodeFactory) -> None:
        """A DATA line longer than max_line_length gets 500 5.5.2 and nothing is queued."""
        node = await start_node(smtp={"max_line_length": 1001}, **LOCAL)
        async with session(node) as client:
            await start_data(client)
            await client.send(message("long", body="x" * 1500))
            reply = await client.response()
            assert reply.line.startswith("500 5.5.2 "), reply
            await still_answers(client)
            await assert_nothing_queued(node)
            await send_good(client)

    async def test_line_at_max_line_length(self, start_node: NodeFactory) -> None:
        """A DATA line of exactly max_line_length octets, CRLF included, is accepted."""
        node = await start_node(smtp={"max_line_length": 1001}, **LOCAL)
        async with session(node) as client:
            await start_data(client)
            await client.send(message("edge", body="x" * 999))
            assert (await client.response()).line.endswith(" queued")

    @pytest.mark.parametrize(
        ("body", "prefix"),
        [
            (b"hello\nworld\r\n", "550 5.5.2 "),
            (b"hello\rworld\r\n", "550 5.5.2 "),
            (b"hel\x00lo\r\n", "550 5.6.0 "),
        ],
        ids=["bare-lf", "bare-cr", "nul"],
    )
    async def test_content_fault(self, start_node: NodeFactory, body: bytes, prefix: str) -> None:
        """A bare LF or CR (550 5.5.2) or a NUL (550 5.6.0) refuses the message, queuing nothing."""
        node = await start_node(**LOCAL)
        async with session(node) as client:
            await start_data(client)
            await client.send(b"Subject: x\r\n\r\n" + body + b".\r\n")
            reply = await client.response()
            assert reply.line.startswith(prefix), reply
            await still_answers(client)
            await assert_nothing_queued(node)
            await send_good(client)

    @pytest.mark.parametrize(
        "fake_end",
        [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r"],
        ids=["lf-dot-lf", "lf-dot-crlf", "crlf-dot-lf", "cr-dot-cr"],
    )
    async def test_smuggling_does_not_end_data(
        self, start_node: NodeFactory, fake_end: bytes
    ) -> None:
        """Only CRLF.CRLF ends DATA: a smuggled second transaction gets no replies of its own."""
        node = await start_node(**LOCAL)
        async with session(node) as client:
            await start_data(client)
            await client.send(
                b"Subject: x\r\n\r\nhello"
                + fake_end
                + b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<bob@corp.test>\r\nDATA\r\n"
                + b"Subject: smuggled\r\n\r\nevil\r\n.\r\n"
            )
            reply = await client.response()
            assert reply.line.startswith("550 5.5.2 "), reply
            # Had DATA ended early, the next replies would be the smuggled MAIL's and RCPT's.
            await still_answers(client)
            await assert_nothing_queued(node)
        assert maildir_messages(node.config.mailbox_dir) == {}

    async def test_routing_loop(self, start_node: NodeFactory) -> None:
        """More Received headers than max_received_headers gets 554 5.4.6; at the limit is fine."""
        node = await start_node(smtp={"max_received_headers": 3}, **LOCAL)
        trace = b"Received: from a.test by b.test; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
        async with session(node) as client:
            await start_data(client)
            await client.send(trace * 4 + b"Subject: loop\r\n\r\nbody\r\n.\r\n")
            reply = await client.response()
            assert reply.line.startswith("554 5.4.6 "), reply
            await still_answers(client)
            await assert_nothing_queued(node)
            await start_data(client)
            await client.send(trace * 3 + b"Subject: ok\r\n\r\nReceived: in body\r\n.\r\n")
            assert (await client.response()).line.endswith(" queued")


class TestConnectionEnds:
    async def test_idle_timeout(self, start_node: NodeFactory) -> None:
        """An idle session gets 421 4.4.2 and is closed; the server takes new sessions."""
        node = await start_node(smtp={"idle_timeout": "1s"})
        async with session(node) as client:
            rest = await client.expect_closed(within=10)
            assert rest.startswith(b"421 4.4.2 "), rest
            assert rest.endswith(b"\r\n")
            assert rest.count(b"\r\n") == 1
        async with session(node) as client:
            await still_answers(client)

    async def test_idle_timeout_during_data(self, start_node: NodeFactory) -> None:
        """A DATA transfer that stalls gets 421 4.4.2 and the partial message is not queued."""
        node = await start_node(smtp={"idle_timeout": "1s"}, **LOCAL)
        async with session(node) as client:
            await start_data(client)
            await client.send(b"Subject: stalled\r\n\r\nfirst line\r\n")
            rest = await client.expect_closed(within=10)
            assert rest.startswith(b"421 4.4.2 "), rest
        await assert_nothing_queued(node)

    async def test_disconnect_mid_data(self, start_node: NodeFactory) -> None:
        """A client that goes away mid-DATA commits nothing; the next client's mail still works."""
        node = await start_node(**LOCAL)
        async with session(node) as client:
            await start_data(client)
            await client.send(b"Subject: cut short\r\n\r\nhalf a mess")
            client.writer.write_eof()
            # The server closing its side shows it has seen the EOF and dropped the session.
            assert await client.expect_closed() == b""
        await assert_nothing_queued(node)
        async with session(node) as client:
            await send_good(client, "after-disconnect")
        (data,) = (await delivered(node, "bob")).values()
        assert b"Subject: after-disconnect" in data
        assert await enqueued(node) == 1


@pytest.fixture
async def colliding_node(tmp_path: Path) -> AsyncIterator[tuple[Node, random.Random]]:
    """A node on a frozen clock whose queue-id randomness the test can rewind."""
    host, _ = free_loopback_address()
    settings = merge(
        node_settings(tmp_path / "hub", "hub", host),
        # A next hop that refuses connections keeps the first message queued (deferred).
        {"routes": [{"domains": ["far.test"], "next_hops": ["127.0.0.1:1"]}]},
    )
    rng = random.Random(1)
    node = Node(parse_config(settings), clock=lambda: 1_700_000_000.0, rng=rng)
    await node.start()
    try:
        yield node, rng
    finally:
        await node.stop(grace=5)


class TestHookFailure:
    async def test_storage_failure_is_transient(
        self, colliding_node: tuple[Node, random.Random]
    ) -> None:
        """A fault while committing (a queue id collision) gets 451 4.3.0, not 500."""
        node, rng = colliding_node
        async with session(node) as client:
            rng.seed(7)
            await start_data(client, ["x@far.test"])
            await client.send(message("first"))
            first = await client.response()
            assert first.line.endswith(" queued"), first
            rng.seed(7)  # same clock, same draw: the same queue id, which the database refuses
            await start_data(client, ["y@far.test"])
            await client.send(message("second"))
            reply = await client.response()
            assert reply.line.startswith("451 4.3.0 "), reply
            await still_answers(client)
            rng.seed(8)
            await start_data(client, ["z@far.test"])
            await client.send(message("third"))
            third = await client.response()
            assert third.line.endswith(" queued"), third
        assert node.repository is not None
        queued = await node.repository.list_messages()
        assert [[r.address for r in m.recipients] for m in queued] == [
            ["x@far.test"],
            ["z@far.test"],
        ]


@pytest.fixture
def errors_logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Every warning or worse the node logs during the test, tracebacks included."""
    caplog.set_level(logging.WARNING)
    return caplog.records


def no_tracebacks(records: list[logging.LogRecord]) -> None:
    bad = [r for r in records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]


class TestSyntaxBeforeStorage:
    async def test_helo_injection_refused(
        self, start_node: NodeFactory, errors_logged: list[logging.LogRecord]
    ) -> None:
        """HELO with a CR gets 501 5.5.2; nothing of it reaches the Received: header."""
        node = await start_node(**LOCAL)
        async with session(node, ehlo=False) as client:
            await expect(client, b"HELO evil\rX-Injected: yes", "501 5.5.2 ")
            await expect(client, b"EHLO evil\x00X-Injected: yes", "501 5.5.2 ")
            await expect(client, "MAIL FROM:<alice@outside.test>", "503 5.5.1 ")
            await expect(client, "HELO client.test", "250 ")
            await send_good(client, "after-injection")
        (data,) = (await delivered(node, "bob")).values()
        assert b"X-Injected" not in data
        assert b"Received: from client.test (" in data
        no_tracebacks(errors_logged)

    async def test_invalid_utf8_helo(self, start_node: NodeFactory) -> None:
        """HELO with invalid UTF-8 gets 501 5.5.2, not a 250 that makes every DATA 451."""
        node = await start_node(**LOCAL)
        async with session(node, ehlo=False) as client:
            await expect(client, b"HELO \xff\xfe", "501 5.5.2 ")
            await expect(client, b"EHLO client.test", "250")
            await send_good(client)

    @pytest.mark.parametrize(
        ("line", "prefix"),
        [('MAIL FROM:"', "501 5.1.7 "), ('VRFY "', "501 5.1.3 ")],
        ids=["mail", "vrfy"],
    )
    async def test_malformed_paths(
        self,
        start_node: NodeFactory,
        errors_logged: list[logging.LogRecord],
        line: str,
        prefix: str,
    ) -> None:
        """Paths that broke aiosmtpd's parser (IndexError, 451) get a permanent 501."""
        node = await start_node(**LOCAL)
        async with session(node) as client:
            await expect(client, line, prefix)
            await expect(client, "MAIL FROM:<alice@outside.test>", "250 2.1.0")
            await expect(client, 'RCPT TO:"', "501 5.1.3 ")
            await expect(client, "RCPT TO:<bob@corp.test>", "250 2.1.5")
            await expect(client, "DATA", "354 ")
            await client.send(message("after-bad-path"))
            assert (await client.response()).line.endswith(" queued")
        no_tracebacks(errors_logged)

    async def test_auth_help_and_smtputf8(self, start_node: NodeFactory) -> None:
        """AUTH gets 503 5.5.1; HELP lists real verbs; a UTF-8 address needs SMTPUTF8."""
        node = await start_node(**LOCAL)
        async with session(node) as client:
            await expect(client, "AUTH PLAIN AGJvYgBzZWNyZXQ=", "503 5.5.1 ")
            help_reply = await expect(client, "HELP", "214 2.0.0 Supported commands: ")
            listed = set(help_reply.line.split(": ", 1)[1].split())
            assert {"EHLO", "MAIL", "RCPT", "DATA", "XSHADOW"} <= listed
            assert not listed & {"AUTH", "STARTTLS", "EXPN"}
            await expect(client, "MAIL FROM:<alïce@outside.test>", "553 5.6.7 ")
            await expect(client, "MAIL FROM:<alïce@outside.test> SMTPUTF8", "250 2.1.0")
            await expect(client, "RCPT TO:<bøb@corp.test>", "250 2.1.5")
            await expect(client, "DATA", "354 ")
            await client.send(message("utf8"))
            assert (await client.response()).line.endswith(" queued")
        (data,) = (await delivered(node, mailbox_dirname("bøb"))).values()
        assert b"Subject: utf8" in data
