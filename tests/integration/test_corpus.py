"""The shared corpus of real messages relayed from node A to node B, byte for byte.

Each message is sent with CRLF line ends to its own recipient m<index>@corp.test on A, which
routes corp.test to B, which delivers into Maildir. What B writes must be the bytes sent,
behind exactly the trace fields hubd adds: Return-Path (B's Maildir delivery) and one
Received per hop. With A's size limit below the two largest messages, those two are refused
with 552 5.3.4, whether the client declares SIZE or not, and never reach the queue.
"""

from __future__ import annotations

import asyncio
import re
import smtplib
from dataclasses import dataclass
from pathlib import Path

import pytest

from hubd.node import Node
from hubd.testing import async_wait_until, maildir_messages
from tests.conftest import NodeFactory, skip_module_without_corpus

pytestmark = pytest.mark.integration
skip_module_without_corpus()

SENDER = "corpus@outside.test"
DOMAIN = "corp.test"
LARGE = ("enclosed-endless.eml", "torture.eml")  # 3 MB and 1.8 MB
SIZE_LIMIT = 1_000_000  # above every other corpus message (the next is 250 kB)

_LINE_END = re.compile(rb"\r\n|\r|\n")
_FIELD_NAME = re.compile(rb"^([!-9;-~]+):")


@dataclass(frozen=True, slots=True)
class CorpusMessage:
    name: str
    recipient: str
    data: bytes


def to_crlf(data: bytes) -> bytes:
    """The message with every line end (CRLF, lone LF, lone CR) as CRLF, ending in CRLF."""
    converted = _LINE_END.sub(b"\r\n", data)
    return converted if converted.endswith(b"\r\n") else converted + b"\r\n"


def load_corpus(directory: Path) -> list[CorpusMessage]:
    """Every corpus message in name order, each with a recipient of its own."""
    paths = sorted(directory.glob("*.eml"))
    assert paths, f"no .eml files in {directory}"
    return [
        CorpusMessage(path.name, f"m{index}@{DOMAIN}", to_crlf(path.read_bytes()))
        for index, path in enumerate(paths)
    ]


def trace_field_names(trace: bytes) -> list[bytes]:
    """The names of the header fields in `trace`, which must be whole CRLF lines only."""
    assert trace.endswith(b"\r\n"), trace[-200:]
    names: list[bytes] = []
    for line in trace[:-2].split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and names:
            continue  # a folded continuation of the field before
        match = _FIELD_NAME.match(line)
        assert match is not None, f"not a header field line: {line[:200]!r}"
        names.append(match[1])
    return names


def assert_relayed_unchanged(delivered: bytes, sent: bytes) -> None:
    """`delivered` is `sent` behind Return-Path and two Received fields, and nothing else.

    The split is made at len(sent) from the end rather than by reading header syntax from the
    front: five corpus messages open with a line of spaces, which a reader would take for a
    continuation of the Received field in front of it.
    """
    assert len(delivered) > len(sent)
    cut = len(delivered) - len(sent)
    assert delivered[cut:] == sent, "message bytes changed in transit"
    assert trace_field_names(delivered[:cut]) == [b"Return-Path", b"Received", b"Received"]
    assert delivered.startswith(f"Return-Path: <{SENDER}>\r\nReceived: from ".encode())
    assert delivered.index(b"by b.hubd.test (hubd)") < delivered.index(b"by a.hubd.test (hubd)")


def send_with_size(host: str, port: int, messages: list[CorpusMessage]) -> dict[str, str]:
    """Send each message on one session (smtplib declares SIZE); the final reply per name."""
    replies: dict[str, str] = {}
    with smtplib.SMTP(host, port, local_hostname="client.test", timeout=30) as client:
        client.ehlo()
        for message in messages:
            try:
                client.sendmail(SENDER, [message.recipient], message.data)
            except smtplib.SMTPSenderRefused as error:
                replies[message.name] = f"{error.smtp_code} {error.smtp_error.decode()}"
            else:
                replies[message.name] = "250"
    return replies


def send_without_size(host: str, port: int, messages: list[CorpusMessage]) -> dict[str, str]:
    """Send each message on one session with no SIZE parameter; the reply to DATA per name."""
    replies: dict[str, str] = {}
    with smtplib.SMTP(host, port, local_hostname="client.test", timeout=30) as client:
        client.ehlo()
        for message in messages:
            assert client.mail(SENDER)[0] == 250
            assert client.rcpt(message.recipient)[0] == 250
            code, text = client.data(message.data)
            replies[message.name] = f"{code} {text.decode()}"
            if code != 250:
                client.rset()
    return replies


async def start_pair(start_node: NodeFactory, **a_smtp: object) -> tuple[Node, Node]:
    """B delivering corp.test into Maildir, and A routing corp.test to B."""
    b = await start_node("b", local_domains=[DOMAIN])
    a = await start_node(
        "a",
        routes=[{"domains": [DOMAIN], "next_hops": [str(b.relay_addresses[0])]}],
        smtp=a_smtp,
    )
    return a, b


async def wait_for_deliveries(b: Node, count: int) -> dict[Path, bytes]:
    """B's delivered files, once there are `count` of them (60 s at most)."""
    root = b.config.mailbox_dir / DOMAIN

    def enough() -> dict[Path, bytes]:
        found = maildir_messages(root)
        return found if len(found) >= count else {}

    return await async_wait_until(enough, 60, f"{count} deliveries on B")


def by_recipient(b: Node, delivered: dict[Path, bytes]) -> dict[str, bytes]:
    """Delivered files keyed by recipient address (one file per mailbox expected)."""
    root = b.config.mailbox_dir / DOMAIN
    out: dict[str, bytes] = {}
    for path, data in delivered.items():
        address = f"{path.relative_to(root).parts[0]}@{DOMAIN}"
        assert address not in out, f"two copies for {address}"
        out[address] = data
    return out


class TestCorpusRelay:
    async def test_every_message_arrives_byte_for_byte(
        self, start_node: NodeFactory, corpus: Path
    ) -> None:
        """Every corpus message relayed A to B lands in B's Maildir exactly as sent."""
        messages = load_corpus(corpus)
        a, b = await start_pair(start_node)
        address = a.relay_addresses[0]

        replies = await asyncio.to_thread(send_with_size, address.host, address.port, messages)
        assert replies == {m.name: "250" for m in messages}

        delivered = by_recipient(b, await wait_for_deliveries(b, len(messages)))
        assert sorted(delivered) == sorted(m.recipient for m in messages)
        for message in messages:
            try:
                assert_relayed_unchanged(delivered[message.recipient], message.data)
            except AssertionError as error:
                raise AssertionError(f"{message.name}: {error}") from error


class TestCorpusSizeLimit:
    async def test_large_messages_refused_others_pass(
        self, start_node: NodeFactory, corpus: Path
    ) -> None:
        """Below the two largest sizes, A refuses those two with 552 5.3.4 and relays the rest."""
        messages = load_corpus(corpus)
        large = [m for m in messages if m.name in LARGE]
        others = [m for m in messages if m.name not in LARGE]
        assert sorted(m.name for m in large) == sorted(LARGE)
        assert all(len(m.data) > SIZE_LIMIT for m in large)
        assert all(len(m.data) < SIZE_LIMIT for m in others)
        a, b = await start_pair(start_node, max_message_size=SIZE_LIMIT)
        address = a.relay_addresses[0]

        declared = await asyncio.to_thread(send_with_size, address.host, address.port, messages)
        undeclared = await asyncio.to_thread(send_without_size, address.host, address.port, large)

        for replies in (declared, undeclared):
            for message in large:
                assert replies[message.name].startswith("552 5.3.4 "), replies[message.name]
        assert {name: declared[name] for name in (m.name for m in others)} == {
            m.name: "250" for m in others
        }

        delivered = by_recipient(b, await wait_for_deliveries(b, len(others)))
        assert sorted(delivered) == sorted(m.recipient for m in others)
        for message in others:
            assert_relayed_unchanged(delivered[message.recipient], message.data)

        repository = a.repository
        assert repository is not None
        assert (await repository.stats())["ops:enqueue"] == len(others)

        async def a_empty() -> bool:
            return not await repository.list_messages()

        await async_wait_until(a_empty, 10, "A to forget the relayed messages")
