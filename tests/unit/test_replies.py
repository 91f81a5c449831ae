"""The reply catalog and the rewriting of aiosmtpd's replies to carry enhanced codes."""

from __future__ import annotations

import re

import pytest

from hubd import replies
from hubd.replies import Reply, with_enhanced_code

CATALOG = {name: value for name, value in vars(replies).items() if isinstance(value, Reply)}


class TestWithEnhancedCode:
    @pytest.mark.parametrize(
        ("line", "expected"),
        [
            ("250 OK", "250 2.0.0 OK"),
            ("221 Bye", "221 2.0.0 Bye"),
            ("252 Cannot VRFY user", "252 2.5.0 Cannot VRFY user"),
            ("500 Error: bad syntax", "500 5.5.2 bad syntax"),
            ('500 Error: command "FOO" not recognized', '500 5.5.2 command "FOO" not recognized'),
            ("501 Syntax: MAIL FROM: <address>", "501 5.5.4 Syntax: MAIL FROM: <address>"),
            ("503 Error: nested MAIL command", "503 5.5.1 nested MAIL command"),
            ("503 Error: need RCPT command", "503 5.5.1 need RCPT command"),
            (
                "555 MAIL FROM parameters not recognized",
                "555 5.5.4 MAIL FROM parameters not recognized",
            ),
            ("599 Something new", "599 5.0.0 Something new"),
            ("299 Something new", "299 2.0.0 Something new"),
        ],
        ids=[
            "ok",
            "bye",
            "vrfy",
            "strips-error-prefix",
            "unknown-command",
            "syntax",
            "nested-mail",
            "need-rcpt",
            "unknown-parameter",
            "unlisted-5xx-gets-class-code",
            "unlisted-2xx-gets-class-code",
        ],
    )
    def test_adds_code(self, line: str, expected: str) -> None:
        """A library reply without an enhanced code gets one chosen by its basic code."""
        assert with_enhanced_code(line) == expected

    @pytest.mark.parametrize(
        ("line", "expected"),
        [
            ("552 Error: Too much mail data", str(replies.MESSAGE_TOO_BIG)),
            (
                "552 Error: message size exceeds fixed maximum message size",
                str(replies.MESSAGE_TOO_BIG),
            ),
            ("500 Line too long (see RFC5321 4.5.3.1.6)", str(replies.LINE_TOO_LONG)),
            ("500 Command line too long", str(replies.LINE_TOO_LONG)),
            ("503 Error: send HELO first", "503 5.5.1 Send EHLO or HELO first"),
            ("530 Must issue a STARTTLS command first", "530 5.7.0 Must issue STARTTLS first"),
        ],
        ids=["data-too-big", "size-too-big", "data-line", "command-line", "helo-first", "tls"],
    )
    def test_replaces_whole(self, line: str, expected: str) -> None:
        """Library replies whose text says too little are replaced by hubd's own."""
        assert with_enhanced_code(line) == expected

    @pytest.mark.parametrize(
        "line",
        [
            "220 hub.test ESMTP hubd",
            "354 End data with <CR><LF>.<CR><LF>",
            "334 ",
            "334 VXNlcm5hbWU6",
            "214 Help text",
            "502 5.5.1 Too many unrecognized commands, goodbye.",
            "421 4.7.0 MAIL sent too many times",
            "553 5.1.3 Error: malformed address",
            "250 2.0.0",
            "not a reply",
            "",
            "250",
        ],
        ids=[
            "greeting",
            "354",
            "auth-empty-challenge",
            "auth-challenge",
            "help",
            "already-coded",
            "already-coded-421",
            "already-coded-keeps-text",
            "code-only",
            "not-a-reply",
            "empty",
            "bare-code",
        ],
    )
    def test_leaves_alone(self, line: str) -> None:
        """Exempt replies (RFC 2034), coded replies and non-replies pass through unchanged."""
        assert with_enhanced_code(line) == line

    def test_continuation_line_keeps_separator(self) -> None:
        """A continuation line keeps its dash (EHLO's own lines bypass this in server.py)."""
        assert with_enhanced_code("250-Some line") == "250-2.0.0 Some line"

    @pytest.mark.parametrize("name", sorted(CATALOG), ids=sorted(CATALOG))
    def test_catalog_replies_pass_unchanged(self, name: str) -> None:
        """Every reply hubd sends already carries its code, so rewriting is a no-op."""
        line = str(CATALOG[name])
        assert with_enhanced_code(line) == line


class TestCatalog:
    @pytest.mark.parametrize("name", sorted(CATALOG), ids=sorted(CATALOG))
    def test_codes_agree(self, name: str) -> None:
        """The enhanced code's class matches the basic code's first digit (RFC 3463)."""
        reply = CATALOG[name]
        assert 200 <= reply.code < 600
        assert re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", reply.enhanced)
        assert reply.enhanced[0] == str(reply.code)[0]
        assert reply.text
        assert "\r" not in reply.text
        assert "\n" not in reply.text

    @pytest.mark.parametrize(
        ("reply", "success", "transient"),
        [
            (Reply(250, "2.0.0", "Ok"), True, False),
            (Reply(451, "4.3.0", "Later"), False, True),
            (Reply(550, "5.1.1", "No"), False, False),
            (Reply(354, "", "Go on"), False, False),
        ],
        ids=["2xx", "4xx", "5xx", "3xx"],
    )
    def test_kind(self, reply: Reply, success: bool, transient: bool) -> None:
        """is_success and is_transient follow the first digit."""
        assert reply.is_success is success
        assert reply.is_transient is transient

    def test_str(self) -> None:
        """A reply prints as code, enhanced code and text, separated by single spaces."""
        assert str(Reply(550, "5.7.1", "Relay access denied")) == "550 5.7.1 Relay access denied"

    def test_queued(self) -> None:
        """The reply to DATA names the queue id."""
        assert str(replies.queued("0ABC")) == "250 2.0.0 0ABC queued"
