"""The parameters after a MAIL or RCPT path (RFC 5321 4.1.2 esmtp-param), checked.

Owns: which parameters hubd takes and their syntax: on MAIL SIZE, BODY, SMTPUTF8, RET and
ENVID (RFC 3461 DSN) and XSHADOW's XORIGIN and XHOLD; on RCPT NOTIFY and ORCPT.
Public: MailParams, RcptParams, parse_mail_params(), parse_rcpt_params(), decode_xtext().
Failures: none raised; a malformed, repeated or unknown parameter gives its Reply.
Limits: xtext is decoded (RFC 3461 4); ORCPT keeps its address type ("rfc822;bob@x");
XORIGIN's and XHOLD's values are checked by the session, which knows whether XSHADOW was given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hubd import replies
from hubd.replies import Reply

_XTEXT_HEX = re.compile(r"\+([0-9A-F]{2})")
# RFC 5321 4.1.2: esmtp-keyword and esmtp-value (printable US-ASCII but "=" and space).
_PARAM = re.compile(r"(?P<key>[A-Za-z0-9][A-Za-z0-9-]*)(?:=(?P<value>[!-<>-~]+))?\Z")
_NOTIFY_WORDS = frozenset({"SUCCESS", "FAILURE", "DELAY"})
_MAIL_KEYS = frozenset({"SIZE", "BODY", "SMTPUTF8", "RET", "ENVID", "XORIGIN", "XHOLD"})
_RCPT_KEYS = frozenset({"NOTIFY", "ORCPT"})
MAX_ENVID = 100  # RFC 3461 4.4
MAX_ORCPT = 500  # RFC 3461 4.2
MAX_SIZE_DIGITS = 20


@dataclass(frozen=True, slots=True)
class MailParams:
    ret: str = ""  # "FULL", "HDRS" or "" when not given
    envid: str = ""
    origin: str = ""  # XORIGIN (XSHADOW peers only), checked by the session
    hold: str = ""  # XHOLD: a redundancy copy of the primary at this host:port (ditto)
    size: int | None = None  # the SIZE the client declared
    smtputf8: bool = False  # RFC 6531: the envelope may hold non-ASCII addresses


@dataclass(frozen=True, slots=True)
class RcptParams:
    notify: str = ""  # "NEVER" or a comma list of SUCCESS, FAILURE, DELAY; "" when not given
    orcpt: str = ""


def decode_xtext(value: str) -> str:
    """RFC 3461 xtext: "+XX" is the character with hex code XX."""
    return _XTEXT_HEX.sub(lambda m: chr(int(m[1], 16)), value)


def _parameters(text: str, known: frozenset[str]) -> dict[str, str | None] | Reply:
    # Keyword (upper-cased) -> value (None for a bare keyword), or the refusal.
    found: dict[str, str | None] = {}
    for token in text.split(" "):
        if not token:
            continue
        match = _PARAM.match(token)
        if match is None:
            return replies.BAD_ARGUMENTS
        key = match["key"].upper()
        if key not in known:
            return replies.UNKNOWN_PARAMETER
        if key in found:
            return replies.PARAMETER_TWICE
        found[key] = match["value"]
    return found


def parse_mail_params(text: str) -> MailParams | Reply:
    """The parameters after MAIL's path, or the reply refusing them."""
    found = _parameters(text, _MAIL_KEYS)
    if isinstance(found, Reply):
        return found
    size: int | None = None
    if "SIZE" in found:
        value = found["SIZE"] or ""
        if not value.isdigit() or len(value) > MAX_SIZE_DIGITS:
            return replies.BAD_SIZE
        size = int(value)
    if "BODY" in found and (found["BODY"] or "").upper() not in ("7BIT", "8BITMIME"):
        return replies.BAD_BODY
    if found.get("SMTPUTF8", None) is not None:
        return replies.BAD_SMTPUTF8
    ret = (found.get("RET") or "").upper()
    if "RET" in found and ret not in ("FULL", "HDRS"):
        return replies.BAD_RET
    envid = decode_xtext(found.get("ENVID") or "")
    if "ENVID" in found and not (0 < len(envid) <= MAX_ENVID and envid.isprintable()):
        return replies.BAD_ENVID
    if "XORIGIN" in found and not found["XORIGIN"]:
        return replies.BAD_ORIGIN
    if "XHOLD" in found and not found["XHOLD"]:
        return replies.BAD_HOLD
    return MailParams(
        ret=ret,
        envid=envid,
        origin=found.get("XORIGIN") or "",
        hold=found.get("XHOLD") or "",
        size=size,
        smtputf8="SMTPUTF8" in found,
    )


def parse_rcpt_params(text: str) -> RcptParams | Reply:
    """The parameters after RCPT's path, or the reply refusing them."""
    found = _parameters(text, _RCPT_KEYS)
    if isinstance(found, Reply):
        return found
    notify = ""
    if "NOTIFY" in found:
        words = [w.strip().upper() for w in (found["NOTIFY"] or "").split(",")]
        if words != ["NEVER"] and not set(words) <= _NOTIFY_WORDS:
            return replies.BAD_NOTIFY
        notify = ",".join(words)
    orcpt = ""
    if "ORCPT" in found:
        kind, semi, address = (found["ORCPT"] or "").partition(";")
        if not semi or not kind or not address:
            return replies.BAD_ORCPT
        orcpt = f"{kind.lower()};{decode_xtext(address)}"
        if not orcpt.isprintable() or len(orcpt) > MAX_ORCPT:
            return replies.BAD_ORCPT
    return RcptParams(notify, orcpt)
