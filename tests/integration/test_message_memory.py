"""Nothing keeps a large message's bytes once it is committed and delivered.

A 6 MB message is sent to a node and delivered (into its Maildir, and over SMTP to a second
node); the SMTP session stays open after DATA, as a client's may. Python memory traced from
before the message to after its delivery must come back to within a small fraction of the
message: no tracking line, scheduler job, session or cache holds on to it. (The process's
RSS is the allocator's business, measured by hand; see the closing note of issue 11.)

SQLite must let go of it too: Python's sqlite3 keeps each cached statement's parameters
bound (sqlite3_reset does not clear bindings), which kept the last body inserted until the
next message; the intake's plain executemany no longer does (the last test).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import smtplib
import tracemalloc
from collections.abc import Callable, Iterator

import pytest

from hubd.node import Node
from hubd.testing import async_wait_until, maildir_messages
from tests.conftest import NodeFactory

pytestmark = pytest.mark.integration

SIZE = 6_000_000
SLACK = SIZE // 6  # a sixth of the message: more than any bookkeeping, less than a copy


def _message() -> bytes:
    line = b"x" * 998 + b"\r\n"
    head = b"From: a@corp.test\r\nSubject: big\r\nMessage-ID: <big@corp.test>\r\n\r\n"
    return head + line * (SIZE // len(line))


def _send_and_keep_open(node: Node, opened: list[smtplib.SMTP]) -> None:
    address = node.relay_addresses[0]
    client = smtplib.SMTP(address.host, address.port, local_hostname="client.test", timeout=60)
    opened.append(client)
    client.sendmail("a@corp.test", ["u@corp.test"], _message())


@pytest.fixture
def traced() -> Iterator[None]:
    tracemalloc.start()
    yield
    tracemalloc.stop()


def _python_memory() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def _deliver(
    start_node: NodeFactory,
    relay: bool,
    opened: list[smtplib.SMTP],
    measure: Callable[[], int] = _python_memory,
) -> int:
    """Start the node(s), send the message (its session left open in `opened`), wait for its
    delivery; returns what `measure` said once the nodes ran, before the message."""
    final = await start_node("final", local_domains=["corp.test"])
    first = final
    if relay:
        route = {"domains": ["corp.test"], "next_hops": [str(final.relay_addresses[0])]}
        first = await start_node("first", routes=[route])
    before = measure()
    await asyncio.to_thread(_send_and_keep_open, first, opened)
    box = final.config.mailbox_dir / "corp.test" / "u"
    await async_wait_until(lambda: maildir_messages(box), 60, "the delivery")
    return before


@pytest.fixture
def opened() -> Iterator[list[smtplib.SMTP]]:
    """Client sessions left open after DATA, closed at the end of the test."""
    clients: list[smtplib.SMTP] = []
    yield clients
    for client in clients:
        client.close()


@pytest.mark.usefixtures("traced")
class TestNoReferenceAfterDelivery:
    @pytest.mark.parametrize("relay", [False, True], ids=["maildir", "smtp-relay"])
    async def test_python_memory_comes_back(
        self, start_node: NodeFactory, opened: list[smtplib.SMTP], relay: bool
    ) -> None:
        """Once delivered (the sender's job ends just after), under a sixth stays allocated."""
        before = await _deliver(start_node, relay, opened)

        def released() -> bool:
            return _python_memory() - before < SLACK

        await async_wait_until(released, 10, "the message's memory to be released")


def _sqlite() -> ctypes.CDLL | None:
    """The SQLite library Python's sqlite3 uses (shared), to ask how much memory it holds."""
    name = ctypes.util.find_library("sqlite3")
    if name is None:
        return None
    library = ctypes.CDLL(name)
    library.sqlite3_memory_used.restype = ctypes.c_int64
    return library


async def test_sqlite_lets_go_of_the_body(
    start_node: NodeFactory, opened: list[smtplib.SMTP]
) -> None:
    """Once the message is delivered, SQLite holds far less than the message."""
    library = _sqlite()
    if library is None:
        pytest.skip("no shared libsqlite3 to ask")
    before = await _deliver(start_node, False, opened, library.sqlite3_memory_used)
    grown = library.sqlite3_memory_used() - before
    # Half the message: room for the page caches filling up (2 MiB per connection by
    # default), none for a copy of the body.
    assert grown < SIZE // 2, f"SQLite holds {grown} bytes more"
