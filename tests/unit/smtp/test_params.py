"""RFC 3461 parameters taken out of MAIL and RCPT arguments."""

from __future__ import annotations

import pytest

from hubd.smtp.params import (
    MailParams,
    ParamError,
    RcptParams,
    decode_xtext,
    split_mail_params,
    split_rcpt_params,
)


class TestMailParams:
    @pytest.mark.parametrize(
        ("arg", "rest", "params"),
        [
            ("FROM:<a@x>", "FROM:<a@x>", MailParams()),
            ("FROM:<a@x> SIZE=10 RET=HDRS", "FROM:<a@x> SIZE=10", MailParams("HDRS", "")),
            ("FROM:<a@x> ret=full ENVID=QQ+2B1", "FROM:<a@x>", MailParams("FULL", "QQ+1")),
            ("FROM:<> ENVID=x BODY=8BITMIME", "FROM:<> BODY=8BITMIME", MailParams("", "x")),
        ],
        ids=["none", "ret-hdrs", "lowercase-and-xtext", "null-sender"],
    )
    def test_split(self, arg: str, rest: str, params: MailParams) -> None:
        """hubd's parameters are removed and decoded; the others stay for aiosmtpd."""
        assert split_mail_params(arg) == (rest, params)

    @pytest.mark.parametrize(
        "arg",
        ["FROM:<a@x> RET=ALL", "FROM:<a@x> RET=FULL RET=HDRS", "FROM:<a@x> ENVID=" + "x" * 101],
        ids=["bad-ret", "twice", "long-envid"],
    )
    def test_malformed(self, arg: str) -> None:
        """A bad value gets 501 5.5.4."""
        with pytest.raises(ParamError) as caught:
            split_mail_params(arg)
        assert str(caught.value.reply).startswith("501 5.5.4")


class TestRcptParams:
    @pytest.mark.parametrize(
        ("arg", "params"),
        [
            ("TO:<b@y>", RcptParams()),
            ("TO:<b@y> NOTIFY=NEVER", RcptParams("NEVER", "")),
            ("TO:<b@y> NOTIFY=success,delay", RcptParams("SUCCESS,DELAY", "")),
            ("TO:<b@y> ORCPT=rfc822;b+40y", RcptParams("", "rfc822;b@y")),
        ],
        ids=["none", "never", "list", "orcpt-xtext"],
    )
    def test_split(self, arg: str, params: RcptParams) -> None:
        """NOTIFY is upper-cased, ORCPT's xtext decoded, and both removed from the argument."""
        assert split_rcpt_params(arg) == ("TO:<b@y>", params)

    @pytest.mark.parametrize(
        "arg",
        ["TO:<b@y> NOTIFY=NEVER,SUCCESS", "TO:<b@y> NOTIFY=SOMETIMES", "TO:<b@y> ORCPT=b@y"],
        ids=["never-and-more", "unknown-word", "orcpt-without-type"],
    )
    def test_malformed(self, arg: str) -> None:
        """A bad NOTIFY or ORCPT gets 501 5.5.4."""
        with pytest.raises(ParamError):
            split_rcpt_params(arg)


def test_xtext_passes_plain_text() -> None:
    """Text without +XX escapes is unchanged."""
    assert decode_xtext("plain-text") == "plain-text"
