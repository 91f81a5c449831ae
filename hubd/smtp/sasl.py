"""The SASL mechanisms AUTH offers, PLAIN (RFC 4616) and LOGIN, as pure decoding.

Owns: base64 responses, PLAIN's authzid/authcid/password triple, LOGIN's two prompts.
Public: MECHANISMS, LOGIN_USERNAME, LOGIN_PASSWORD, decode_response(), plain_credentials(),
login_text().
Failures: none raised; anything malformed decodes to None.
Limits: an authorization identity other than the user's own (PLAIN's authzid) is refused:
no user may act for another.
See also: hubd/smtp/session.py (the exchange), RFC 4954 (AUTH).
"""

from __future__ import annotations

import base64
import binascii

MECHANISMS = ("PLAIN", "LOGIN")
LOGIN_USERNAME = base64.b64encode(b"Username:").decode()
LOGIN_PASSWORD = base64.b64encode(b"Password:").decode()
MAX_RESPONSE = 12288  # RFC 4954 4: the longest response line a server must take


def decode_response(text: str) -> bytes | None:
    """A client's base64 response; "=" is the empty one (RFC 4954 4); None if malformed."""
    if text == "=":
        return b""
    if not text or len(text) > MAX_RESPONSE or not text.isascii():
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def plain_credentials(data: bytes) -> tuple[str, str] | None:
    """PLAIN's message [authzid] NUL authcid NUL passwd as (user, password), or None."""
    parts = data.split(b"\x00")
    if len(parts) != 3:
        return None
    authzid, user, password = (login_text(part) for part in parts)
    if authzid is None or not user or password is None:
        return None
    if authzid and authzid != user:
        return None
    return user, password


def login_text(data: bytes) -> str | None:
    """A user name or password as text: UTF-8 without NUL, CR or LF; None otherwise."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if any(c in text for c in "\x00\r\n"):
        return None
    return text
