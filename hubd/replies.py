"""Every SMTP reply hubd sends: code, enhanced status code and text, in one catalog.

Owns: the reply texts of the inbound session (its decisions, its limits, the XSHADOW verbs)
and of routing; multi-line replies; the bytes a reply is on the wire.
Public: Reply, the reply constants and builders below.
Limits: the greeting, the HELO/EHLO replies and 354 carry no enhanced code (RFC 2034
exempts them); no reply echoes client input, so nothing a client sends reaches a reply.
See also: hubd/smtp/session.py (which chooses them), RFC 3463 (the enhanced codes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply: a three-digit code, an enhanced status code and a line of text.

    A multi-line reply has the texts of its earlier lines in `earlier`; each line carries
    the code, and the enhanced code when there is one.
    """

    code: int
    enhanced: str  # "" only for the replies RFC 2034 exempts
    text: str
    earlier: tuple[str, ...] = ()

    def __str__(self) -> str:
        return "\r\n".join(self.lines())

    def lines(self) -> list[str]:
        """The reply's lines without line ends, continuation lines marked with a dash."""
        prefix = f"{self.enhanced} " if self.enhanced else ""
        texts = [*self.earlier, self.text]
        last = len(texts) - 1
        return [
            f"{self.code}{'-' if n < last else ' '}{prefix}{text}" for n, text in enumerate(texts)
        ]

    def wire(self) -> bytes:
        """The reply as sent: every line ending in CRLF."""
        return "".join(line + "\r\n" for line in self.lines()).encode("utf-8")

    @property
    def is_success(self) -> bool:
        return 200 <= self.code < 300

    @property
    def is_transient(self) -> bool:
        return 400 <= self.code < 500


# Commands accepted.
OK = Reply(250, "2.0.0", "OK")
SENDER_OK = Reply(250, "2.1.0", "Sender ok")
RECIPIENT_OK = Reply(250, "2.1.5", "Recipient ok")
CANNOT_VRFY = Reply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery")
START_DATA = Reply(354, "", "End data with <CR><LF>.<CR><LF>")
BYE = Reply(221, "2.0.0", "Bye")

# Syntax (RFC 3463 X.5.x for commands, X.1.x for addresses).
BAD_SYNTAX = Reply(500, "5.5.2", "Syntax error")
UNKNOWN_COMMAND = Reply(500, "5.5.1", "Command not recognized")
TOO_MANY_UNKNOWN = Reply(502, "5.5.1", "Too many unrecognized commands; closing connection")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented")
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")
BAD_HELO = Reply(501, "5.5.2", "Invalid EHLO/HELO argument")
BAD_ARGUMENTS = Reply(501, "5.5.4", "Syntax error in parameters or arguments")
NO_ARGUMENTS_EXPECTED = Reply(501, "5.5.4", "This command takes no arguments")
BAD_SENDER_SYNTAX = Reply(501, "5.1.7", "Bad sender address syntax")
BAD_RECIPIENT_SYNTAX = Reply(501, "5.1.3", "Bad recipient address syntax")
UNKNOWN_PARAMETER = Reply(555, "5.5.4", "MAIL or RCPT parameter not recognized")
PARAMETER_TWICE = Reply(501, "5.5.4", "Parameter given twice")
BAD_SIZE = Reply(501, "5.5.4", "SIZE takes a number of octets")
BAD_BODY = Reply(501, "5.5.4", "BODY must be 7BIT or 8BITMIME")
BAD_SMTPUTF8 = Reply(501, "5.5.4", "SMTPUTF8 takes no value")
BAD_RET = Reply(501, "5.5.4", "RET must be FULL or HDRS")
BAD_ENVID = Reply(501, "5.5.4", "Malformed ENVID")
BAD_NOTIFY = Reply(501, "5.5.4", "NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY")
BAD_ORCPT = Reply(501, "5.5.4", "ORCPT must be addr-type;address")
# RFC 6531 3.5: a non-ASCII address needs the SMTPUTF8 parameter on MAIL.
NEEDS_SMTPUTF8 = Reply(553, "5.6.7", "Non-ASCII address needs the SMTPUTF8 parameter")
HELP_TOPIC_UNKNOWN = Reply(504, "5.5.4", "HELP topic unknown")

# Sequence.
NEEDS_HELO = Reply(503, "5.5.1", "Send EHLO or HELO first")
NEEDS_EHLO = Reply(503, "5.5.1", "Send EHLO first")
NESTED_MAIL = Reply(503, "5.5.1", "Nested MAIL command")
NEEDS_MAIL = Reply(503, "5.5.1", "Need MAIL command")
NEEDS_RCPT = Reply(503, "5.5.1", "Need RCPT command")
# RFC 4954 4: AUTH where it is not offered is a command out of sequence.
AUTH_NOT_OFFERED = Reply(503, "5.5.1", "AUTH is not offered on this listener")

# TLS and AUTH (RFC 3207, RFC 4954, RFC 3463 X.7.x).
READY_FOR_TLS = Reply(220, "2.0.0", "Ready to start TLS")
TLS_ALREADY = Reply(503, "5.5.1", "TLS is already active")
AUTH_NEEDS_TLS = Reply(538, "5.7.11", "Encryption required for requested authentication mechanism")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
AUTH_ALREADY = Reply(503, "5.5.1", "Already authenticated")
AUTH_MECHANISM_UNKNOWN = Reply(504, "5.5.4", "Unrecognized authentication type")
AUTH_CANCELLED = Reply(501, "5.0.0", "Authentication cancelled")
AUTH_BAD_RESPONSE = Reply(501, "5.5.2", "Cannot decode the authentication response")
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")
AUTH_BUSY = Reply(454, "4.7.0", "Temporary authentication failure; try again later")
TOO_MANY_AUTH_FAILURES = Reply(
    421, "4.7.0", "Too many failed authentications from your address; closing connection"
)
SENDER_NOT_OWNED = Reply(553, "5.7.1", "Sender address not owned by the authenticated user")
TOO_MANY_MESSAGES_FROM_USER = Reply(
    421, "4.7.0", "Too many messages from this user; try again later"
)

# Policy.
RELAY_DENIED = Reply(550, "5.7.1", "Relay access denied")
NO_SUCH_USER = Reply(550, "5.1.1", "No such user here")

# Limits (DESIGN.md, Durability and limits; README, the [smtp] limit keys).
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
HEADER_TOO_BIG = Reply(552, "5.3.4", "Message header section exceeds the size limit")
TOO_MANY_SESSIONS = Reply(421, "4.7.0", "Too many connections; try again later")
TOO_MANY_FROM_CLIENT = Reply(421, "4.7.0", "Too many connections from your address")
TOO_MANY_COMMANDS = Reply(421, "4.7.0", "Too many commands in this session; closing connection")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors in this session; closing connection")
TOO_MANY_MESSAGES = Reply(421, "4.7.0", "Too many messages from your address; try again later")
IDLE_TIMEOUT = Reply(421, "4.4.2", "Idle timeout exceeded; closing connection")
DATA_TIMEOUT = Reply(421, "4.4.2", "DATA took too long; closing connection")

# Content (RFC 5321 2.3.8: CRLF only; RFC 6152: no NUL; trace information, 4.4).
BARE_LINE_END = Reply(
    550, "5.5.2", "Message contains a bare CR or LF; lines must end with CRLF (RFC 5321 2.3.8)"
)
NUL_IN_MESSAGE = Reply(550, "5.6.0", "Message contains NUL characters (RFC 6152)")
ROUTING_LOOP = Reply(554, "5.4.6", "Too many Received headers: routing loop detected")

# The node itself.
LOCAL_ERROR = Reply(451, "4.3.0", "Local error in processing; try again later")
LOCAL_ERROR_CLOSING = Reply(421, "4.3.0", "Local error in processing; closing connection")
SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down; try again later")
# Back pressure (hubd/backpressure.py), and a disk that filled anyway; Exchange's text.
INSUFFICIENT_RESOURCES = Reply(452, "4.3.1", "Insufficient system resources")
# In the DSN of a message an operator removed (`hubd queue remove --dsn`).
REMOVED_BY_OPERATOR = Reply(550, "5.0.0", "Removed from the queue by its operator")

# XSHADOW (docs/xshadow.md).
XSHADOW_NOT_A_PEER = Reply(550, "5.7.1", "XSHADOW is only for peers")
XSHADOW_BAD_ARGUMENT = Reply(501, "5.5.4", "Syntax error in XSHADOW arguments")
XSHADOW_ALREADY = Reply(503, "5.5.1", "XSHADOW already given in this session")
XSHADOW_NEEDED = Reply(503, "5.5.1", "Send XSHADOW first")
XSHADOW_IN_TRANSACTION = Reply(503, "5.5.1", "Not inside a mail transaction")
ORIGIN_NEEDS_XSHADOW = Reply(555, "5.5.4", "XORIGIN is accepted only after XSHADOW")
BAD_ORIGIN = Reply(501, "5.5.4", "Malformed XORIGIN")
HOLD_NEEDS_XSHADOW = Reply(555, "5.5.4", "XHOLD is accepted only after XSHADOW")
BAD_HOLD = Reply(501, "5.5.4", "XHOLD must be the primary's host:port")
HOLD_NEEDS_OWN_ORIGIN = Reply(501, "5.5.4", "XHOLD needs an XORIGIN of the XSHADOW sender's own")
NOT_REDUNDANT = Reply(451, "4.4.0", "Message failed to be made redundant")
ACK_TOO_HIGH = Reply(501, "5.5.4", "ACK is past the last sequence number listed")

# Routing by DNS (RFC 3463 X.4.x, RFC 7505); the 4.4.0 text is Exchange 2007's, verbatim.
DNS_QUERY_FAILED = Reply(451, "4.4.0", "DNS query failed")
DNS_SERVER_FAILURE = Reply(451, "4.4.3", "DNS lookup failed; will retry")
NULL_MX = Reply(556, "5.1.10", "Recipient address has null MX")
NO_SUCH_DOMAIN = Reply(550, "5.1.2", "Recipient domain does not exist")
NO_MX_ADDRESS = Reply(550, "5.4.4", "Unable to route: no mail exchanger has an address")


def greeting(hostname: str) -> Reply:
    """The 220 banner."""
    return Reply(220, "", f"{hostname} ESMTP hubd")


def helo(hostname: str) -> Reply:
    """The reply to HELO."""
    return Reply(250, "", hostname)


def ehlo(hostname: str, extensions: Sequence[str]) -> Reply:
    """The reply to EHLO: the name, then one line per extension, then HELP."""
    return Reply(250, "", "HELP", (hostname, *extensions))


def help_commands(verbs: Sequence[str]) -> Reply:
    """The reply to HELP: the commands this session really accepts."""
    return Reply(214, "2.0.0", "Supported commands: " + " ".join(sorted(verbs)))


def help_syntax(syntax: str) -> Reply:
    """The reply to HELP <command>."""
    return Reply(214, "2.0.0", f"Syntax: {syntax}")


def auth_challenge(challenge: str) -> Reply:
    """A SASL challenge (RFC 4954 4): 334 and base64 text, empty for "send your response"."""
    return Reply(334, "", challenge)


def queued(queue_id: str) -> Reply:
    """The reply to DATA once the message is durably committed."""
    return Reply(250, "2.0.0", f"{queue_id} queued")


def xshadow_identity(name: str, incarnation: str) -> Reply:
    """The reply to XSHADOW: this node's name and queue incarnation."""
    return Reply(250, "2.0.0", f"XSHADOW {name} {incarnation}")


def discard_notices(queue_ids: Sequence[str], seq: int) -> Reply:
    """The reply to XQDISCARD: one ID line per notice, then the highest sequence listed."""
    last = f"SEQ={seq}" + ("" if queue_ids else " none")
    return Reply(250, "2.0.0", last, tuple(f"ID={queue_id}" for queue_id in queue_ids))


def taken_dropped(count: int) -> Reply:
    """The reply to XQTAKEN: how many of the named messages were dropped."""
    return Reply(250, "2.0.0", f"{count} dropped")
