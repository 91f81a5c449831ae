"""Command lines as the client sent them: the verb, its argument, and their syntax.

Owns: splitting a command line into verb and argument, the length limit of a command line
per verb (RFC 5321 4.5.3.1.4, raised for MAIL, RCPT and XQTAKEN, whose parameters need
room), and what an acceptable HELO/EHLO argument is.
Public: Command, parse_command(), line_limit(), is_utf8(), valid_helo().
Failures: none raised; a line that is no command gives None.
Limits: a line may end in CRLF or a bare LF (many clients send LF); anything else in it is
part of the argument and judged by the verb.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

COMMAND_LINE_LIMIT = 512  # RFC 5321 4.5.3.1.4, CRLF included
PARAMETER_LINE_LIMIT = 4096  # DSN's ORCPT and ENVID, XORIGIN, or 50 XQTAKEN ids need more
_LONG_VERBS = frozenset({"MAIL", "RCPT", "XQTAKEN"})
_VERB = re.compile(rb"[A-Za-z][A-Za-z0-9]{0,15}\Z")
MAX_HELO_LENGTH = 255  # RFC 5321 4.5.3.1.2 (a domain), with room for an address literal


@dataclass(frozen=True, slots=True)
class Command:
    """One command: its verb upper-cased, and the text after the first space.

    The argument is UTF-8 with invalid bytes kept as surrogate escapes, so each verb can
    refuse them (encoding it with "utf-8" then fails).
    """

    verb: str
    argument: str


def parse_command(line: bytes) -> Command | None:
    """The command on a line (its line end included), or None when it has no ASCII verb."""
    if line.endswith(b"\r\n"):
        line = line[:-2]
    elif line.endswith(b"\n"):
        line = line[:-1]
    verb, _, argument = line.partition(b" ")
    if not _VERB.match(verb):
        return None
    return Command(
        verb.decode("ascii").upper(), argument.strip(b" ").decode("utf-8", "surrogateescape")
    )


def line_limit(verb: str) -> int:
    """The longest command line hubd takes for this verb, CRLF included."""
    return PARAMETER_LINE_LIMIT if verb in _LONG_VERBS else COMMAND_LINE_LIMIT


def is_utf8(text: str) -> bool:
    """Whether the text came from valid UTF-8 (no surrogate escapes in it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def valid_helo(argument: str) -> bool:
    """Whether a HELO/EHLO argument may be used: one word of printable UTF-8.

    The argument goes into the Received: header, so CR, LF, NUL, any other control or
    format character, spaces and invalid UTF-8 are refused.
    """
    if not argument or len(argument) > MAX_HELO_LENGTH or not is_utf8(argument):
        return False
    return all(unicodedata.category(char)[0] not in "CZ" for char in argument)
