"""Every SMTP reply hubd sends: code, enhanced status code and text, in one catalog.

Owns: the reply texts of hubd's own decisions, and the rewriting of aiosmtpd's built-in replies
so that every reply after EHLO carries an enhanced status code (RFC 2034, RFC 3463).
Public: Reply, the reply constants and builders below, with_enhanced_code().
Limits: the greeting, EHLO/HELO lines, 354 and AUTH challenges are left as they are (RFC 2034
exempts them).
See also: hubd/smtp/server.py (where library replies pass through with_enhanced_code).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply: a three-digit code, an enhanced status code and a line of text."""

    code: int
    enhanced: str
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}"

    @property
    def is_success(self) -> bool:
        return 200 <= self.code < 300

    @property
    def is_transient(self) -> bool:
        return 400 <= self.code < 500


OK = Reply(250, "2.0.0", "Ok")
SENDER_OK = Reply(250, "2.1.0", "Sender ok")
RECIPIENT_OK = Reply(250, "2.1.5", "Recipient ok")
BAD_SENDER_SYNTAX = Reply(501, "5.1.7", "Bad sender address syntax")
BAD_RECIPIENT_SYNTAX = Reply(501, "5.1.3", "Bad recipient address syntax")
BAD_HELO = Reply(501, "5.5.4", "Invalid EHLO/HELO argument")
RELAY_DENIED = Reply(550, "5.7.1", "Relay access denied")
NO_SUCH_USER = Reply(550, "5.1.1", "No such user here")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
BARE_LINE_END = Reply(
    550, "5.5.2", "Message contains a bare CR or LF; lines must end with CRLF (RFC 5321 2.3.8)"
)
NUL_IN_MESSAGE = Reply(550, "5.6.0", "Message contains NUL characters (RFC 6152)")
ROUTING_LOOP = Reply(554, "5.4.6", "Too many Received headers: routing loop detected")
LOCAL_ERROR = Reply(451, "4.3.0", "Local error in processing; try again later")
SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down; try again later")
TOO_MANY_SESSIONS = Reply(421, "4.7.0", "Too many connections; try again later")
IDLE_TIMEOUT = Reply(421, "4.4.2", "Idle timeout exceeded; closing connection")
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")
# Routing by DNS (RFC 3463 X.4.x, RFC 7505); the 4.4.0 text is Exchange 2007's, verbatim.
DNS_QUERY_FAILED = Reply(451, "4.4.0", "DNS query failed")
DNS_SERVER_FAILURE = Reply(451, "4.4.3", "DNS lookup failed; will retry")
NULL_MX = Reply(556, "5.1.10", "Recipient address has null MX")
NO_SUCH_DOMAIN = Reply(550, "5.1.2", "Recipient domain does not exist")
NO_MX_ADDRESS = Reply(550, "5.4.4", "Unable to route: no mail exchanger has an address")


def queued(queue_id: str) -> Reply:
    """The reply to DATA once the message is durably committed."""
    return Reply(250, "2.0.0", f"{queue_id} queued")


# aiosmtpd's own replies that hubd replaces whole, because their text says too little.
_LIBRARY_REPLACEMENTS: dict[str, Reply] = {
    "552 Error: Too much mail data": MESSAGE_TOO_BIG,
    "552 Error: message size exceeds fixed maximum message size": MESSAGE_TOO_BIG,
    "500 Line too long (see RFC5321 4.5.3.1.6)": LINE_TOO_LONG,
    "500 Command line too long": LINE_TOO_LONG,
    "503 Error: send HELO first": Reply(503, "5.5.1", "Send EHLO or HELO first"),
    "530 Must issue a STARTTLS command first": Reply(530, "5.7.0", "Must issue STARTTLS first"),
}

# The enhanced code for a library reply that has none, by its basic code (RFC 3463).
_DEFAULT_ENHANCED: dict[int, str] = {
    221: "2.0.0",
    250: "2.0.0",
    251: "2.1.5",
    252: "2.5.0",
    421: "4.7.0",
    450: "4.2.0",
    451: "4.3.0",
    452: "4.3.1",
    454: "4.7.0",
    500: "5.5.2",
    501: "5.5.4",
    502: "5.5.1",
    503: "5.5.1",
    504: "5.5.4",
    530: "5.7.0",
    550: "5.0.0",
    552: "5.3.4",
    553: "5.1.3",
    554: "5.0.0",
    555: "5.5.4",
}

_REPLY_LINE = re.compile(r"^(?P<code>[2-5]\d\d)(?P<sep>[ -])(?P<text>.*)\Z", re.DOTALL)
_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}(?: |\Z)")
_EXEMPT_CODES = frozenset({220, 214, 334, 354})


def with_enhanced_code(line: str) -> str:
    """Return a reply line carrying an enhanced status code, adding one when it lacks it."""
    replacement = _LIBRARY_REPLACEMENTS.get(line)
    if replacement is not None:
        return str(replacement)
    match = _REPLY_LINE.match(line)
    if match is None:
        return line
    code = int(match["code"])
    text = match["text"]
    if code in _EXEMPT_CODES or _ENHANCED.match(text):
        return line
    enhanced = _DEFAULT_ENHANCED.get(code, f"{code // 100}.0.0")
    text = text.removeprefix("Error: ")
    return f"{code}{match['sep']}{enhanced} {text}"
