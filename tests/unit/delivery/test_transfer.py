"""Dot-stuffing a body that arrives in chunks, wherever the chunks split it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hubd.delivery.transfer import dot_stuff


def _whole(body: bytes) -> bytes:
    """RFC 5321 4.5.2 on the whole body at once: the reference."""
    lines = body.split(b"\r\n")
    return b"\r\n".join(b"." + line if line.startswith(b".") else line for line in lines)


BODIES = [
    b".starts with a dot\r\nplain\r\n",
    b"a\r\n.b\r\n..c\r\n.\r\nend\r\n",
    b"no dots at all\r\n",
    b"dot.in.the.middle\r\n.\r\n",
    b"\r\n.\r\n.\r\n",
]


@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
def test_every_split_point(body: bytes) -> None:
    """Split in two at every offset: the same bytes as stuffing the whole."""
    for cut in range(len(body) + 1):
        assert b"".join(dot_stuff([body[:cut], body[cut:]])) == _whole(body), cut


@given(
    st.lists(st.sampled_from([b".", b"\r", b"\n", b"\r\n", b"x", b".."]), max_size=40),
    st.lists(st.integers(min_value=0, max_value=60), max_size=6),
)
def test_random_bodies_and_cuts(pieces: list[bytes], cuts: list[int]) -> None:
    """Any CRLF-clean body, cut anywhere, stuffs as the whole does."""
    body = b"".join(pieces).replace(b"\r", b"").replace(b"\n", b"\r\n")
    points = sorted({min(c, len(body)) for c in cuts})
    chunks = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    assert b"".join(dot_stuff(chunks)) == _whole(body)
