"""The parameters after a MAIL or RCPT path: which hubd takes, and their syntax."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hubd import replies
from hubd.replies import Reply
from hubd.smtp.params import (
    MailParams,
    RcptParams,
    decode_xtext,
    parse_mail_params,
    parse_rcpt_params,
)


class TestMailParams:
    @pytest.mark.parametrize(
        ("text", "params"),
        [
            ("", MailParams()),
            (" SIZE=10 RET=HDRS", MailParams("HDRS", "", size=10)),
            (" ret=full ENVID=QQ+2B1", MailParams("FULL", "QQ+1")),
            (" ENVID=x BODY=8BITMIME", MailParams("", "x")),
            (" body=7bit  SMTPUTF8", MailParams(smtputf8=True)),
            (" XORIGIN=hub-a.0123456789abcdef.Q1", MailParams(origin="hub-a.0123456789abcdef.Q1")),
        ],
        ids=["none", "ret-hdrs", "lowercase-and-xtext", "body", "smtputf8", "xorigin"],
    )
    def test_parse(self, text: str, params: MailParams) -> None:
        """Known parameters are decoded, in any case and order."""
        assert parse_mail_params(text) == params

    @pytest.mark.parametrize(
        ("text", "reply"),
        [
            (" RET=ALL", replies.BAD_RET),
            (" RET=FULL RET=HDRS", replies.PARAMETER_TWICE),
            (" ENVID=" + "x" * 101, replies.BAD_ENVID),
            (" ENVID=a+00b", replies.BAD_ENVID),
            (" SIZE=", replies.BAD_ARGUMENTS),
            (" SIZE", replies.BAD_SIZE),
            (" SIZE=-1", replies.BAD_SIZE),
            (" SIZE=" + "9" * 21, replies.BAD_SIZE),
            (" BODY=BINARYMIME", replies.BAD_BODY),
            (" SMTPUTF8=yes", replies.BAD_SMTPUTF8),
            (" XORIGIN", replies.BAD_ORIGIN),
            (" AUTH=<>", replies.UNKNOWN_PARAMETER),
            (" =x", replies.BAD_ARGUMENTS),
            (" SIZE=1=2", replies.BAD_ARGUMENTS),
            (" SIZE=\x00", replies.BAD_ARGUMENTS),
        ],
        ids=[
            "bad-ret",
            "twice",
            "long-envid",
            "envid-control",
            "empty-value",
            "size-without-value",
            "negative-size",
            "huge-size",
            "bad-body",
            "smtputf8-value",
            "xorigin-without-value",
            "unknown",
            "no-keyword",
            "equals-in-value",
            "control-in-value",
        ],
    )
    def test_refused(self, text: str, reply: Reply) -> None:
        """A bad parameter gets its 501 5.5.4, an unknown one 555 5.5.4."""
        assert parse_mail_params(text) == reply


class TestRcptParams:
    @pytest.mark.parametrize(
        ("text", "params"),
        [
            ("", RcptParams()),
            (" NOTIFY=NEVER", RcptParams("NEVER", "")),
            (" NOTIFY=success,delay", RcptParams("SUCCESS,DELAY", "")),
            (" ORCPT=rfc822;b+40y", RcptParams("", "rfc822;b@y")),
        ],
        ids=["none", "never", "list", "orcpt-xtext"],
    )
    def test_parse(self, text: str, params: RcptParams) -> None:
        """NOTIFY is upper-cased and ORCPT's xtext decoded."""
        assert parse_rcpt_params(text) == params

    @pytest.mark.parametrize(
        ("text", "reply"),
        [
            (" NOTIFY=NEVER,SUCCESS", replies.BAD_NOTIFY),
            (" NOTIFY=SOMETIMES", replies.BAD_NOTIFY),
            (" ORCPT=b@y", replies.BAD_ORCPT),
            (" ORCPT=rfc822;+0A", replies.BAD_ORCPT),
            (" SIZE=10", replies.UNKNOWN_PARAMETER),
        ],
        ids=["never-and-more", "unknown-word", "orcpt-without-type", "orcpt-control", "mail-only"],
    )
    def test_refused(self, text: str, reply: Reply) -> None:
        """A bad NOTIFY or ORCPT gets 501 5.5.4; a MAIL parameter on RCPT 555."""
        assert parse_rcpt_params(text) == reply


@given(st.text(max_size=60))
def test_never_raises(text: str) -> None:
    """Whatever follows the path, the answer is parameters or a 5xx reply."""
    for parsed in (parse_mail_params(text), parse_rcpt_params(text)):
        assert isinstance(parsed, MailParams | RcptParams) or parsed.code >= 500


def test_xtext_passes_plain_text() -> None:
    """Text without +XX escapes is unchanged."""
    assert decode_xtext("plain-text") == "plain-text"
