"""Telling a node's processes that work was committed, or that messages left the node.

Owns: the two signals that cross a node's processes: "new work is due for these next hops"
(wakes the delivery process of each hop's shard, instead of a 30 s poll) and "these
messages have left" (releases delayed acknowledgements held by acceptors); in one process
they are plain calls, across processes bytes on pipes the supervisor made and every child
inherited.
Also: the back-pressure level the supervisor measured, one byte per change to each child
(the last byte read is the level now).
Public: Signals, LocalSignals, PipeSignals, PipeEnds, read_wakeups(), read_departures(),
send_pressure(), read_pressure(), FLUSH (the byte of an operator's retry, which also
forgets which hops are down).
Failures: a full pipe drops a wake-up byte (the reader is already due to wake) but never a
departure (those are buffered by the transport).
Limits: a departure line is a queue id; ids are ASCII without spaces by construction.
See also: hubd/supervisor.py (makes the pipes), hubd/node.py (uses them).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from hubd.backpressure import Level
from storage.shards import shard_of


class Signals(Protocol):
    def work(self, next_hops: Iterable[str] | None) -> None:
        """Work for these next hops (None: for any) was committed or became due."""

    def left(self, queue_ids: Iterable[str]) -> None:
        """These messages have left the node (delivered, failed, or handed to a peer)."""


@dataclass(slots=True)
class LocalSignals:
    """One process does everything: signals are calls, wired once its parts exist."""

    on_work: Callable[[], None] = lambda: None
    on_left: Callable[[Iterable[str]], None] = lambda _ids: None

    def work(self, next_hops: Iterable[str] | None) -> None:
        self.on_work()

    def left(self, queue_ids: Iterable[str]) -> None:
        self.on_left(queue_ids)


@dataclass(frozen=True, slots=True)
class PipeEnds:
    """The descriptors one child got: write ends to every shard and acceptor, its own reads."""

    wake: tuple[int, ...]  # one per delivery shard, in shard order
    departures: tuple[int, ...]  # one per acceptor
    wake_read: int | None = None  # this delivery process's own wake-up pipe
    departures_read: int | None = None  # this acceptor's own departure pipe


@dataclass(slots=True)
class PipeSignals:
    """Signals between processes: one byte per shard woken, one line per departure."""

    ends: PipeEnds
    _departures: list[asyncio.WriteTransport] = field(default_factory=list)

    async def open(self) -> None:
        """Wrap the departure pipes in transports (they buffer what a pipe cannot take)."""
        loop = asyncio.get_running_loop()
        for fd in self.ends.departures:
            transport, _ = await loop.connect_write_pipe(
                asyncio.Protocol, os.fdopen(fd, "wb", buffering=0, closefd=False)
            )
            self._departures.append(transport)

    def work(self, next_hops: Iterable[str] | None) -> None:
        shards = len(self.ends.wake)
        targets = range(shards) if next_hops is None else {shard_of(h, shards) for h in next_hops}
        for shard in targets:
            # A full pipe is full of wake-ups already.
            with contextlib.suppress(BlockingIOError):
                os.write(self.ends.wake[shard], b"!")

    def left(self, queue_ids: Iterable[str]) -> None:
        data = "".join(f"{queue_id}\n" for queue_id in queue_ids).encode()
        if data:
            for transport in self._departures:
                transport.write(data)

    def close(self) -> None:
        for transport in self._departures:
            transport.close()


def _drain(fd: int) -> bytes | None:
    """What the pipe holds now; None once every writer is gone."""
    data = bytearray()
    try:
        while chunk := os.read(fd, 65536):
            data.extend(chunk)
    except BlockingIOError:
        return bytes(data)
    return None if not data else bytes(data)


def _watch(fd: int, got: Callable[[bytes], None]) -> Callable[[], None]:
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)

    def ready() -> None:
        data = _drain(fd)
        if data is None:  # the supervisor is gone (and this process about to be killed)
            loop.remove_reader(fd)
            return
        got(data)

    loop.add_reader(fd, ready)

    def stop() -> None:
        loop.remove_reader(fd)

    return stop


FLUSH = b"F"  # an operator's retry: forget which next hops are down, then look


def read_wakeups(
    fd: int, wake: Callable[[], None], flush: Callable[[], None]
) -> Callable[[], None]:
    """Call `wake` whenever bytes arrive on `fd` (`flush` when FLUSH is among them);
    returns the function that stops it."""
    return _watch(fd, lambda data: flush() if FLUSH in data else wake())


def read_departures(fd: int, left: Callable[[list[str]], None]) -> Callable[[], None]:
    """Call `left` with the queue ids that arrive on `fd`, line by line."""
    pending = bytearray()

    def got(data: bytes) -> None:
        pending.extend(data)
        *lines, rest = pending.split(b"\n")
        pending[:] = rest
        left([line.decode("ascii", "replace") for line in lines if line])

    return _watch(fd, got)


def send_pressure(fd: int, level: Level) -> None:
    """Tell one child the node's level (a digit); a full pipe means a child long gone."""
    with contextlib.suppress(BlockingIOError, BrokenPipeError):
        os.write(fd, str(int(level)).encode("ascii"))


def read_pressure(fd: int, publish: Callable[[Level], None]) -> Callable[[], None]:
    """Call `publish` with the level the supervisor sent last, whenever it sends one."""

    def got(data: bytes) -> None:
        last = data[-1:]
        if last in (b"0", b"1", b"2"):
            publish(Level(int(last)))

    return _watch(fd, got)
