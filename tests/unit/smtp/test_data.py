"""The DATA stream read incrementally: its end, unstuffing, and the content checks."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hubd.smtp.data import ContentFault, ContentLimits, DataReader, DataSummary

LIMITS = ContentLimits(
    max_message_size=10_000, max_line_length=100, max_header_size=500, max_received_headers=3
)
_LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)


def stuffed(content: bytes) -> bytes:
    """The DATA stream for a content ending in CRLF (or empty): dots doubled, then the end."""
    return _LEADING_DOT.sub(b"..", content) + b".\r\n"


def read(chunks: list[bytes], limits: ContentLimits = LIMITS) -> tuple[DataSummary, bytes, bytes]:
    """Feed the chunks; the summary, the content kept, and the bytes after the end."""
    reader = DataReader(limits)
    kept = []
    for n, chunk in enumerate(chunks):
        content = reader.feed(chunk)
        if reader.fault is not None:
            kept.clear()
        else:
            kept.append(content)
        if reader.done:
            return reader.summary(), b"".join(kept), reader.rest + b"".join(chunks[n + 1 :])
    raise AssertionError("the stream did not end")


def read_whole(stream: bytes, limits: ContentLimits = LIMITS) -> tuple[DataSummary, bytes, bytes]:
    return read([stream], limits)


CASES = [
    b"Subject: x\r\n\r\nhello\r\n",
    b"",
    b"\r\n",
    b"Subject: caf\xc3\xa9\r\n\r\n\xff\xfe 8-bit\r\n",
    b"Subject: x\r\n\r\n.leading dot\r\n..two\r\n.\r\n",
    b"Received: a\r\nMessage-ID:\r\n <m@x>\r\n\r\nbody\r\n",
    b"Subject: x\r\n\r\nhello\nworld\r\n",
    b"Subject: x\r\n\r\nhello\rworld\r\n",
    b"Subject: x\r\n\r\nhel\x00lo\r\n",
    b"Subject: x\r\n\r\n" + b"y" * 150 + b"\r\n",
    b"Received: 1\r\nReceived: 2\r\nReceived: 3\r\nReceived: 4\r\n\r\n",
    b"X: " + b"h" * 90 + b"\r\n" + (b" " + b"h" * 90 + b"\r\n") * 6 + b"\r\n",
]


class TestEnd:
    def test_only_crlf_dot_crlf_ends(self) -> None:
        """Bare-LF or bare-CR dots do not end DATA; the real end leaves the rest alone."""
        stream = b"a\n.\nb\r\n.\n\r\nc\r.\r\r\n.\r\nQUIT\r\n"
        summary, _, rest = read_whole(stream)
        assert summary.fault is ContentFault.BARE_LINE_END
        assert rest == b"QUIT\r\n"

    def test_empty_message(self) -> None:
        """A lone dot straight after the 354 is an empty message."""
        summary, content, rest = read_whole(b".\r\nNOOP\r\n")
        assert (summary.fault, content, summary.size, rest) == (None, b"", 0, b"NOOP\r\n")

    def test_unstuffing(self) -> None:
        """Transparency dots are removed (RFC 5321 4.5.2)."""
        content = b"Subject: x\r\n\r\n.hidden\r\n..\r\n...three\r\n"
        summary, kept, _ = read_whole(stuffed(content))
        assert kept == content
        assert summary.size == len(content)

    def test_not_done(self) -> None:
        """Until the end arrives the reader says so, and has no summary."""
        reader = DataReader(LIMITS)
        reader.feed(b"Subject: x\r\n\r\nbody\r\n.")
        assert not reader.done
        with pytest.raises(ValueError, match="not ended"):
            reader.summary()
        reader.feed(b"\r\n")
        assert reader.done
        with pytest.raises(ValueError, match="already ended"):
            reader.feed(b"more")


class TestFaults:
    @pytest.mark.parametrize(
        ("content", "fault"),
        [
            (b"Subject: x\r\n\r\nhello\r\n", None),
            (b"Subject: caf\xc3\xa9\r\n\r\n\xff\xfe 8-bit\r\n", None),
            (b"Subject: x\r\n\r\nhello\nworld\r\n", ContentFault.BARE_LINE_END),
            (b"\nSubject: x\r\n", ContentFault.BARE_LINE_END),
            (b"Subject: x\r\n\r\nhello\rworld\r\n", ContentFault.BARE_LINE_END),
            (b"Subject: x\r\n\r\nhello\r\r\n", ContentFault.BARE_LINE_END),
            (b"Subject: x\r\n\r\nhel\x00lo\r\n", ContentFault.NUL),
            (b"\x00\r\n", ContentFault.NUL),
            (b"a\x00b\nc\r\n", ContentFault.BARE_LINE_END),
            (b"x" * 98 + b"\r\n", None),
            (b"x" * 99 + b"\r\n", ContentFault.LINE_TOO_LONG),
            (b"." + b"x" * 98 + b"\r\n", ContentFault.LINE_TOO_LONG),
            (b"x" * 5000 + b"\r\nSubject: after\r\n", ContentFault.LINE_TOO_LONG),
            (b"Received: a\r\n" * 3 + b"\r\n", None),
            (b"Received: a\r\n" * 4 + b"\r\n", ContentFault.ROUTING_LOOP),
            (b"Received: a\r\n\r\n" + b"Received: body\r\n" * 5, None),
            (b"X: " + b"h" * 90 + b"\r\n" + b" h\r\n" * 200 + b"\r\n", ContentFault.HEADER_TOO_BIG),
            (b"Subject: s\r\n\r\n" + b"b" * 90 + b"\r\n" * 100, None),
            ((b"b" * 90 + b"\r\n") * 111, ContentFault.TOO_BIG),
        ],
        ids=[
            "clean",
            "8-bit",
            "bare-lf",
            "bare-lf-first",
            "bare-cr",
            "cr-cr-lf",
            "nul",
            "only-nul",
            "line-end-reported-before-nul",
            "line-at-limit",
            "line-over-limit",
            "stuffed-dot-counts",
            "endless-line",
            "hops-at-limit",
            "hops-over-limit",
            "received-in-body",
            "header-too-big",
            "big-body-small-header",
            "message-too-big",
        ],
    )
    def test_fault(self, content: bytes, fault: ContentFault | None) -> None:
        """Line ends, NUL, line length, hops, header and message size; a fault keeps nothing."""
        summary, kept, _ = read_whole(stuffed(content))
        assert summary.fault is fault
        assert kept == (content if fault is None else b"")


class TestHeaders:
    @pytest.mark.parametrize(
        ("content", "expected"),
        [
            (b"Subject: x\r\n\r\nbody\r\n", 0),
            (b"Received: a\r\nReceived: b\r\nSubject: x\r\n\r\nbody\r\n", 2),
            (b"received: a\r\nRECEIVED : b\r\nReceived\t: c\r\n\r\n", 3),
            (b"Received: a\r\n\tfolded\r\n  Received: not a header\r\n\r\n", 1),
            (b"X-Received: a\r\nReceived-SPF: pass\r\n\r\n", 0),
            (b"Received: a\r\n\r\nReceived: in the body\r\nReceived: again\r\n", 1),
            (b"\r\nReceived: body only\r\n", 0),
            (b"Subject: x\r\nReceived: a\r\n", 1),
            (b"not a header\r\nReceived: a\r\n", 0),
        ],
        ids=[
            "none",
            "two",
            "any-case-and-space-before-colon",
            "continuation-not-counted",
            "other-names",
            "body-not-counted",
            "empty-header-section",
            "no-body",
            "body-without-empty-line",
        ],
    )
    def test_received_count(self, content: bytes, expected: int) -> None:
        """Only Received: fields of the header section count towards the hop limit."""
        limits = ContentLimits(10_000, 1000, 5000, 50)
        assert read_whole(stuffed(content), limits)[0].received == expected

    @pytest.mark.parametrize(
        ("content", "expected"),
        [
            (b"Message-ID: <a@b.test>\r\nSubject: x\r\n\r\nbody\r\n", "<a@b.test>"),
            (b"message-id:<a@b.test>\r\n\r\n", "<a@b.test>"),
            (b"Message-Id :  <a@b.test>  \r\n\r\n", "<a@b.test>"),
            (b"Message-ID:\r\n <a@b.test>\r\nSubject: x\r\n\r\n", "<a@b.test>"),
            (b"Message-ID:\r\n\t<a@b.test>\r\n\r\n", "<a@b.test>"),
            (b"Message-ID: <long\r\n  @b.test>\r\nSubject: x\r\n\r\n", "<long @b.test>"),
            (b"Subject: x\r\nMessage-ID: <last@b.test>\r\n", "<last@b.test>"),
            (b"Message-ID: <first@b>\r\nMessage-ID: <second@b>\r\n\r\n", "<first@b>"),
            (b"Subject: x\r\n\r\nMessage-ID: <body@b.test>\r\n", None),
            (b"Subject: x\r\n\r\n", None),
            (b"Message-ID: \r\nSubject: x\r\n\r\n", None),
            (b"X-Message-ID: <other@b.test>\r\n\r\n", None),
            (b"Message-ID: <\xff@b.test>\r\n\r\n", "<\ufffd@b.test>"),
            (b"Message-ID: <a\x1b[2J@b.test>\r\n\r\n", "<a[2J@b.test>"),
        ],
        ids=[
            "plain",
            "lower-case-no-space",
            "spaces-around",
            "folded-before-value",
            "folded-with-tab",
            "folded-inside-value",
            "last-header-no-body",
            "first-of-two",
            "only-in-body",
            "absent",
            "empty-value",
            "other-header",
            "undecodable-byte",
            "control-characters-dropped",
        ],
    )
    def test_message_id(self, content: bytes, expected: str | None) -> None:
        """The Message-ID header's value, unfolded, printable, from the header section only."""
        assert read_whole(stuffed(content))[0].message_id == expected

    def test_message_id_truncated(self) -> None:
        """An absurdly long value is cut to one header line's worth (998 characters)."""
        limits = ContentLimits(100_000, 10_000, 100_000, 50)
        content = b"Message-ID: <" + b"x" * 2000 + b"@b.test>\r\n\r\n"
        value = read_whole(stuffed(content), limits)[0].message_id
        assert value is not None
        assert len(value) == 998


class TestChunking:
    @pytest.mark.parametrize("content", CASES, ids=range(len(CASES)))
    def test_split_at_every_offset(self, content: bytes) -> None:
        """Split in two at any offset, or fed byte by byte, the stream reads the same."""
        stream = stuffed(content) + b"NOOP\r\n"
        whole = read_whole(stream)
        for offset in range(len(stream) + 1):
            assert read([stream[:offset], stream[offset:]]) == whole, offset
        assert read([stream[n : n + 1] for n in range(len(stream))]) == whole

    @given(
        st.lists(
            st.binary(max_size=30).map(lambda b: b.replace(b"\r\n", b"")) | st.just(b"."),
            max_size=20,
        ),
        st.lists(st.integers(0, 400), max_size=8),
    )
    def test_random_splits(self, lines: list[bytes], cuts: list[int]) -> None:
        """Any content, cut anywhere: the same result as fed whole, and CRLF content survives."""
        content = b"".join(line + b"\r\n" for line in lines)
        stream = stuffed(content)
        bounds = sorted({min(cut, len(stream)) for cut in cuts} | {0, len(stream)})
        chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]
        whole = read_whole(stream)
        assert read(chunks) == whole
        summary, kept, _ = whole
        if summary.fault is None:
            assert kept == content
