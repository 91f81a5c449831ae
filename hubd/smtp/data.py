"""The DATA stream, read incrementally: its end, dot-unstuffing, and the content checks.

Owns: finding the end of DATA (only CRLF.CRLF ends it, RFC 5321 4.1.1.4), removing the
transparency dots (4.5.2), and checking as the bytes arrive: line length, message size,
bare CR or LF (2.3.8), NUL (RFC 6152), the size of the header section, the number of
Received: headers (a routing loop), and reading Message-ID.
Public: ContentLimits, ContentFault, DataSummary, DataReader.
Failures: none raised; the first fault found is kept, and the rest of the stream is read
to its end without keeping anything, so the reply comes after the client's final dot.
Limits: fed any split of the stream, it gives the same result; it keeps only a partial
line and the Message-ID header, never the message, which the caller stores.
See also: hubd/smtp/server.py (reads the socket and feeds this), hubd/smtp/session.py.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

_END = b".\r\n"
_HEADER_FIELD = re.compile(rb"([!-9;-~]+)[ \t]*:")  # RFC 5322 2.2 field name, obsolete WSP
_FOLD = re.compile(rb"\r\n[ \t]+")
_SUSPECT = re.compile(rb"[\r\n\x00]")  # in a line before its CRLF: a bare CR or LF, or NUL
MAX_MESSAGE_ID = 998  # RFC 5322 2.1.1 line length
_MESSAGE_ID_KEPT = 4 * MAX_MESSAGE_ID  # octets of a folded Message-ID worth reading


@dataclass(frozen=True, slots=True)
class ContentLimits:
    """What a message may be, in octets."""

    max_message_size: int  # the content kept: unstuffed, CRLF included
    max_line_length: int  # a line as received: its dot and CRLF included
    max_header_size: int
    max_received_headers: int


class ContentFault(enum.StrEnum):
    LINE_TOO_LONG = "LINE_TOO_LONG"
    TOO_BIG = "TOO_BIG"
    BARE_LINE_END = "BARE_LINE_END"
    NUL = "NUL"
    HEADER_TOO_BIG = "HEADER_TOO_BIG"
    ROUTING_LOOP = "ROUTING_LOOP"


@dataclass(frozen=True, slots=True)
class DataSummary:
    """What the checks found once DATA ended."""

    fault: ContentFault | None
    size: int  # octets of content kept (after unstuffing), up to the first fault
    received: int  # Received: headers in the header section, up to the first fault
    message_id: str | None
    has_date: bool = False  # a Date: field is in the header section


class DataReader:
    """Fed the bytes after the 354, chunk by chunk; says when DATA ended and what it held."""

    def __init__(self, limits: ContentLimits) -> None:
        self._limits = limits
        self._partial = b""  # the start of a line not yet ended by CRLF
        self._overlong = False  # the partial line is already past the length limit
        self._in_header = True
        self._header_size = 0
        self._seen_field = False
        self._message_id: bytes | None = None
        self._reading_message_id = False
        self._has_date = False
        self.size = 0
        self.received = 0
        self.fault: ContentFault | None = None
        self.done = False
        self.rest = b""  # bytes after the end of DATA, not part of the message

    def feed(self, chunk: bytes) -> bytes:
        """Take the next bytes; return the content to keep from them (b"" after a fault)."""
        if self.done:
            raise ValueError("DATA has already ended")
        if not (self._partial or self._overlong) and 0 <= chunk.find(b"\r\n") == len(chunk) - 2:
            # The usual case, since the glue reads line by line: exactly one whole line.
            if chunk == _END:
                self.done = True
                return b""
            return self._line(chunk)
        data = self._partial + chunk if self._partial else chunk
        self._partial = b""
        kept: list[bytes] = []
        start = 0
        while (end := data.find(b"\r\n", start)) >= 0:
            if self._bulk_ready():
                start = self._body_lines(data, start, kept)
                if self.done:
                    break
                continue
            line = data[start : end + 2]
            start = end + 2
            if self._overlong:
                self._overlong = False  # the end of a line already refused
                continue
            if line == _END:
                self.done = True
                self.rest = data[start:]
                break
            content = self._line(line)
            if content:
                kept.append(content)
        else:
            self._keep_partial(data[start:])
        return b"".join(kept)

    def summary(self) -> DataSummary:
        """The result, once `done`."""
        if not self.done:
            raise ValueError("DATA has not ended")
        message_id = None
        if self._message_id is not None:
            value = _FOLD.sub(b" ", self._message_id).strip()
            text = "".join(c for c in value.decode("utf-8", "replace") if c.isprintable())
            message_id = text[:MAX_MESSAGE_ID] or None
        return DataSummary(self.fault, self.size, self.received, message_id, self._has_date)

    def _bulk_ready(self) -> bool:
        # Past the header section, with nothing refused and no long line being skipped,
        # whole lines are checked together (one C-speed pass each, not a Python call a line).
        return not self._in_header and self.fault is None and not self._overlong

    def _body_lines(self, data: bytes, start: int, kept: list[bytes]) -> int:
        """Check and keep the whole body lines of data[start:] (up to the end of DATA if it
        is there); returns where the unchecked rest begins."""
        last = data.rfind(b"\r\n", start) + 2
        end = data.find(b"\r\n.\r\n", start - 2 if start >= 2 else start, last + 1)
        if data.startswith(_END, start):
            end = start - 2
        if end >= start - 2 and (end >= start or data.startswith(_END, start)):
            last = end + 2  # the lines before the terminator
            self.done = True
            self.rest = data[last + 3 :]
        region = data[start:last]
        if region:
            self._check_region(region, kept)
        return last + 3 if self.done else last

    def _check_region(self, region: bytes, kept: list[bytes]) -> None:
        # RFC 5321 4.5.2: the first character of a line that starts with a dot goes.
        content = region.replace(b"\r\n.", b"\r\n")
        if content.startswith(b"."):
            content = content[1:]
        if self._region_clean(region, len(content)):
            self.size += len(content)
            kept.append(content)
            return
        # A fault somewhere in the region: line by line, so that what is counted stops at
        # the same line whatever the chunks were.
        for line in region.split(b"\r\n")[:-1]:
            self._line(line + b"\r\n")

    def _region_clean(self, region: bytes, size: int) -> bool:
        limit = self._limits.max_line_length
        # A line whose length with its CRLF passes `limit` has `limit` bytes before its LF.
        # (Split and measured, not searched with a regex: `[^\n]{limit}` retries at every
        # offset, about limit/2 steps a byte on lines just under the limit.)
        if len(region) >= limit and max(map(len, region.split(b"\n"))) >= limit:
            return False
        crlf = region.count(b"\r\n")
        return (
            region.count(b"\r") == crlf
            and region.count(b"\n") == crlf
            and b"\x00" not in region
            and self.size + size <= self._limits.max_message_size
        )

    def _keep_partial(self, tail: bytes) -> None:
        if self._overlong or len(tail) >= self._limits.max_line_length:
            # Past the limit whatever follows: keep only a final CR, which may pair with an
            # LF in the next chunk to end this line.
            self._refuse(ContentFault.LINE_TOO_LONG)
            self._overlong = True
            self._partial = b"\r" if tail.endswith(b"\r") else b""
        else:
            self._partial = tail

    def _refuse(self, fault: ContentFault) -> None:
        if self.fault is None:
            self.fault = fault

    def _line(self, line: bytes) -> bytes:
        # One whole line ending in CRLF; returns it unstuffed, or b"" once refused (after
        # the first fault nothing more is checked or counted: only the end is looked for).
        if self.fault is not None:
            return b""
        if len(line) > self._limits.max_line_length:
            self._refuse(ContentFault.LINE_TOO_LONG)
            return b""
        if line.startswith(b"."):
            line = line[1:]
        if _SUSPECT.search(line, 0, len(line) - 2):
            text = line[:-2]
            if b"\r" in text or b"\n" in text:
                self._refuse(ContentFault.BARE_LINE_END)
            if b"\x00" in text:
                self._refuse(ContentFault.NUL)
        self.size += len(line)
        if self.size > self._limits.max_message_size:
            self._refuse(ContentFault.TOO_BIG)
        if self._in_header:
            self._header_line(line)
        return line if self.fault is None else b""

    def _header_line(self, line: bytes) -> None:
        folded = line[:1] in (b" ", b"\t") and self._seen_field
        field = None if folded else _HEADER_FIELD.match(line)
        if not folded and field is None:
            self._in_header = False  # the empty line, or a body with no empty line before it
            return
        self._header_size += len(line)
        if self._header_size > self._limits.max_header_size:
            self._refuse(ContentFault.HEADER_TOO_BIG)
        if folded:
            message_id = self._message_id
            if self._reading_message_id and message_id and len(message_id) <= _MESSAGE_ID_KEPT:
                self._message_id = message_id + line
            return
        assert field is not None
        self._seen_field = True
        name = field[1].lower()
        self._reading_message_id = name == b"message-id" and self._message_id is None
        if self._reading_message_id:
            self._message_id = line[field.end() :]
        if name == b"date":
            self._has_date = True
        if name == b"received":
            self.received += 1
            if self.received > self._limits.max_received_headers:
                self._refuse(ContentFault.ROUTING_LOOP)
