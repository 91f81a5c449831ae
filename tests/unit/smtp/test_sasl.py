"""Decoding AUTH PLAIN and LOGIN responses."""

from __future__ import annotations

import base64

import pytest

from hubd.smtp.sasl import LOGIN_PASSWORD, LOGIN_USERNAME, decode_response, plain_credentials


def test_prompts() -> None:
    """LOGIN's prompts are base64 of "Username:" and "Password:"."""
    assert (LOGIN_USERNAME, LOGIN_PASSWORD) == ("VXNlcm5hbWU6", "UGFzc3dvcmQ6")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("=", b""), ("YQ==", b"a"), ("YQ", None), ("!!", None), ("", None), ("é", None)],
)
def test_decode_response(text: str, expected: bytes | None) -> None:
    """Strict base64; "=" is the empty response; anything else malformed is None."""
    assert decode_response(text) == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\0alice\0pw", ("alice", "pw")),
        (b"alice\0alice\0pw", ("alice", "pw")),
        (b"bob\0alice\0pw", None),  # acting for another user
        (b"\0\0pw", None),
        (b"\0alice", None),
        (b"\0alice\0p\0w", None),
        (b"\0al\xffice\0pw", None),
        (b"\0alice\0p\nw", None),
    ],
)
def test_plain(data: bytes, expected: tuple[str, str] | None) -> None:
    """PLAIN's authzid NUL authcid NUL password; a foreign authzid is refused."""
    assert plain_credentials(data) == expected


def test_long_response_refused() -> None:
    """A response longer than RFC 4954's 12288 octets is refused."""
    assert decode_response(base64.b64encode(b"a" * 10000).decode()) is None
