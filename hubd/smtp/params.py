"""MAIL and RCPT parameters that hubd handles itself (RFC 3461 DSN: RET, ENVID, NOTIFY, ORCPT).

Owns: taking hubd's parameters (these, and XSHADOW's XORIGIN) out of a MAIL or RCPT
argument before aiosmtpd sees it
(aiosmtpd refuses every RCPT parameter and all but SIZE, BODY and SMTPUTF8 on MAIL), and
checking their syntax.
Public: MailParams, RcptParams, split_mail_params(), split_rcpt_params(), ParamError.
Failures: ParamError with the reply (501 5.5.4) for a malformed value or a repeated keyword.
Limits: xtext is decoded (RFC 3461 4); ORCPT keeps its address type ("rfc822;bob@x").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hubd.replies import Reply

_XTEXT_HEX = re.compile(r"\+([0-9A-F]{2})")
_NOTIFY_WORDS = frozenset({"SUCCESS", "FAILURE", "DELAY"})
MAX_ENVID = 100  # RFC 3461 4.4


class ParamError(Exception):
    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        super().__init__(str(reply))


@dataclass(frozen=True, slots=True)
class MailParams:
    ret: str = ""  # "FULL", "HDRS" or "" when not given
    envid: str = ""
    origin: str = ""  # XORIGIN (XSHADOW peers only), checked by the session


@dataclass(frozen=True, slots=True)
class RcptParams:
    notify: str = ""  # "NEVER" or a comma list of SUCCESS, FAILURE, DELAY; "" when not given
    orcpt: str = ""


def _bad(text: str) -> ParamError:
    return ParamError(Reply(501, "5.5.4", text))


def decode_xtext(value: str) -> str:
    """RFC 3461 xtext: "+XX" is the character with hex code XX."""
    return _XTEXT_HEX.sub(lambda m: chr(int(m[1], 16)), value)


def _split(arg: str, keys: frozenset[str]) -> tuple[str, dict[str, str]]:
    # Parameters follow the path; the path ends at its closing ">" (or is the first word).
    end = arg.rfind(">")
    head, tail = (arg[: end + 1], arg[end + 1 :]) if end >= 0 else (arg, "")
    if end < 0 and " " in arg.strip():
        head, _, tail = arg.strip().partition(" ")
    kept: list[str] = []
    ours: dict[str, str] = {}
    for token in tail.split():
        key, _, value = token.partition("=")
        if key.upper() in keys:
            if key.upper() in ours:
                raise _bad(f"Parameter {key.upper()} given twice")
            ours[key.upper()] = value
        else:
            kept.append(token)
    return " ".join([head, *kept]), ours


def split_mail_params(arg: str) -> tuple[str, MailParams]:
    """The MAIL argument without RET/ENVID, and their checked values."""
    rest, ours = _split(arg, frozenset({"RET", "ENVID", "XORIGIN"}))
    ret = ours.get("RET", "").upper()
    if "RET" in ours and ret not in ("FULL", "HDRS"):
        raise _bad("RET must be FULL or HDRS")
    envid = decode_xtext(ours.get("ENVID", ""))
    if "ENVID" in ours and not (0 < len(envid) <= MAX_ENVID and envid.isprintable()):
        raise _bad("Malformed ENVID")
    return rest, MailParams(ret, envid, ours.get("XORIGIN", ""))


def split_rcpt_params(arg: str) -> tuple[str, RcptParams]:
    """The RCPT argument without NOTIFY/ORCPT, and their checked values."""
    rest, ours = _split(arg, frozenset({"NOTIFY", "ORCPT"}))
    notify = ""
    if "NOTIFY" in ours:
        words = [w.strip().upper() for w in ours["NOTIFY"].split(",")]
        if words != ["NEVER"] and (not words or not set(words) <= _NOTIFY_WORDS):
            raise _bad("NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY")
        notify = ",".join(words)
    orcpt = ""
    if "ORCPT" in ours:
        kind, semi, address = ours["ORCPT"].partition(";")
        if not semi or not kind or not address:
            raise _bad("ORCPT must be addr-type;address")
        orcpt = f"{kind.lower()};{decode_xtext(address)}"
        if not orcpt.isprintable() or len(orcpt) > 500:
            raise _bad("Malformed ORCPT")
    return rest, RcptParams(notify, orcpt)
