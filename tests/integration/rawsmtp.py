"""A raw SMTP client for tests: sends exactly the bytes it is given, reads replies as they come.

smtplib and aiosmtplib refuse or repair the malformed bytes these tests must send.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass

from hubd.config import HostPort

READ_TIMEOUT = 10.0  # seconds for one reply; far above any normal answer on loopback


@dataclass(frozen=True, slots=True)
class Response:
    """One SMTP reply as it came off the wire: its lines without CRLF."""

    lines: tuple[str, ...]

    @property
    def code(self) -> int:
        return int(self.lines[-1][:3])

    @property
    def line(self) -> str:
        """The last (for one-line replies, the only) line."""
        return self.lines[-1]


class RawClient:
    """An SMTP client that sends exactly the bytes it is given and reads replies as they come."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, address: HostPort, source: str | None = None) -> RawClient:
        """Connect (from `source`, a loopback address, when given) and read the greeting."""
        reader, writer = await cls.open(address, source)
        client = cls(reader, writer)
        greeting = await client.response()
        assert greeting.line.startswith("220 "), greeting
        return client

    @staticmethod
    async def open(
        address: HostPort, source: str | None = None
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        local = (source, 0) if source else None
        return await asyncio.open_connection(address.host, address.port, local_addr=local)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self, within: float = READ_TIMEOUT) -> Response:
        """Read one (possibly multi-line) reply."""
        lines: list[str] = []
        async with asyncio.timeout(within):
            while True:
                raw = await self.reader.readline()
                if not raw:
                    raise ConnectionError(f"connection closed after {lines!r}")
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                lines.append(line)
                if len(line) < 4 or line[3] != "-":
                    return Response(tuple(lines))

    async def command(self, line: str | bytes) -> Response:
        data = line.encode() if isinstance(line, str) else line
        await self.send(data + b"\r\n")
        return await self.response()

    async def starttls(self, context: ssl.SSLContext, server_hostname: str) -> None:
        """Run the client side of the TLS handshake on this connection (after a 220)."""
        await self.writer.start_tls(context, server_hostname=server_hostname)

    async def expect_closed(self, within: float = READ_TIMEOUT) -> bytes:
        """Wait for the server to close the connection; return what it sent before that."""
        async with asyncio.timeout(within):
            return await self.reader.read()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()
