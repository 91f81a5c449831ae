"""Reading dropped files: the envelope of pickup and replay files, what is stored, refused."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hubd.pickup.envelope import Refusal, Source, Submission, SubmissionLimits, read_submission

LIMITS = SubmissionLimits(max_line_length=1000, max_recipients=5, max_received_headers=3)
DEFAULT_ID = "<Q.pickup@hub.test>"


def read(raw: bytes, source: Source = Source.PICKUP) -> Submission:
    result = read_submission(raw, source, LIMITS, DEFAULT_ID)
    assert isinstance(result, Submission), result
    return result


def refused(raw: bytes, source: Source = Source.PICKUP) -> str:
    result = read_submission(raw, source, LIMITS, DEFAULT_ID)
    assert isinstance(result, Refusal), result
    return result.reason


class TestPickup:
    def test_envelope_from_headers_and_bcc_removed(self) -> None:
        """Sender from From; recipients from To, Cc and Bcc, once each; Bcc is not stored."""
        got = read(
            b"From: Alice <alice@corp.test>\n"
            b"To: bob@corp.test, Carol <carol@example.net>\n"
            b"Cc: BOB@corp.test\n"
            b"Bcc: hidden@corp.test,\n  also-hidden@corp.test\n"
            b"Subject: hi\n"
            b"Message-ID: <m1@corp.test>\n"
            b"\n"
            b"Bcc: this line is body text\n"
        )
        assert got.sender == "alice@corp.test"
        assert got.recipients == (
            "bob@corp.test",
            "carol@example.net",
            "hidden@corp.test",
            "also-hidden@corp.test",
        )
        assert got.message_id == "<m1@corp.test>"
        head, _, body = got.data.partition(b"\r\n\r\n")
        assert b"hidden" not in head
        assert head.startswith(b"From: Alice <alice@corp.test>\r\nTo: bob@corp.test,")
        assert body == b"Bcc: this line is body text\r\n", "the body is never rewritten"

    def test_sender_header_wins(self) -> None:
        """With several From addresses, Sender: names the one sender (RFC 5322 3.6.2)."""
        got = read(b"From: a@x.test, b@x.test\r\nSender: a@x.test\r\nTo: c@y.test\r\n\r\nhi\r\n")
        assert got.sender == "a@x.test"
        assert refused(b"From: a@x.test, b@x.test\r\nTo: c@y.test\r\n\r\nhi\r\n").startswith(
            "From: must hold exactly one address"
        )

    def test_bytes_kept_when_nothing_is_removed(self) -> None:
        """Without Bcc the header section is stored as written (LF ends become CRLF)."""
        raw = (
            b"From:a@x.test\r\nTo: b@y.test\r\nX-Odd:  two  spaces\r\nSubject: caf\xc3\xa9\r\n"
            b"\r\nbody\r\n"
        )
        assert read(raw).data == f"Message-ID: {DEFAULT_ID}\r\n".encode() + raw

    def test_8bit_body_and_headers_survive_bcc_removal(self) -> None:
        """Removing Bcc keeps 8-bit header text and the body byte for byte."""
        raw = (
            b"From: a@x.test\r\nBcc: h@y.test\r\nSubject: caf\xc3\xa9\r\nMessage-ID: <m@x>\r\n\r\n"
            b"\xff\xfe binary-ish\r\n"
        )
        got = read(raw)
        assert got.data == (
            b"From: a@x.test\r\nSubject: caf\xc3\xa9\r\nMessage-ID: <m@x>\r\n"
            b"\r\n\xff\xfe binary-ish\r\n"
        )
        assert got.recipients == ("h@y.test",)

    @pytest.mark.parametrize(
        ("raw", "reason"),
        [
            (b"To: b@y.test\r\n\r\nno sender\r\n", "From: must hold exactly one address"),
            (b"From: a@x.test\r\nSubject: nobody\r\n\r\n", "no recipients (none in To, Cc or Bcc)"),
            (b"From: a@x.test\r\nTo: undisclosed-recipients:;\r\n\r\n", "no recipients"),
            (b"From: a@x.test\r\nTo: <<<>>>\r\n\r\n", "To: "),
            (b"From: a@x.test\r\nTo: b@y.test\x00\r\n\r\n", "the file holds NUL bytes"),
            (b"From: a@x.test\r\nTo: b@y.test\rX: y\r\n\r\n", "the file holds a bare CR"),
            (b"this is not a message\nat all\n", "the file does not start with a header section"),
            (b"\x89PNG\r\n\x1a\n\x00\x00", "the file holds NUL bytes"),
            (
                b"From: a@x.test\r\nTo: b@y.test\r\n\r\n" + b"x" * 1000 + b"\r\n",
                "smtp.max_line_length",
            ),
            (
                b"From: a@x.test\r\nTo: "
                + b", ".join(b"u%d@y.test" % i for i in range(6))
                + b"\r\n\r\n",
                "more than smtp.max_recipients (5)",
            ),
            (
                b"Received: x\r\n" * 4 + b"From: a@x.test\r\nTo: b@y.test\r\n\r\n",
                "Received: headers (a loop)",
            ),
            (b'From: a@x.test\r\nTo: "b c"@\r\n\r\n', "a header cannot be parsed (IndexError)"),
        ],
        ids=[
            "no-from",
            "no-recipients",
            "empty-group",
            "bad-address",
            "nul",
            "bare-cr",
            "not-headers",
            "binary",
            "long-line",
            "too-many-recipients",
            "loop",
            "no-domain",
        ],
    )
    def test_refused(self, raw: bytes, reason: str) -> None:
        """Files hubd cannot submit come back with a one-line reason."""
        got = refused(raw)
        assert reason in got
        assert "\n" not in got


class TestReplay:
    def test_envelope_from_x_headers(self) -> None:
        """Replay takes the envelope from X-Sender/X-Receiver (not To:), and removes them."""
        got = read(
            b"X-Sender: <>\r\n"
            b"X-Receiver: <u1@corp.test> NOTIFY=NEVER\r\n"
            b"X-Receiver: u2@corp.test\r\n"
            b"X-EndOfInjectedXHeaders: done\r\n"
            b"From: MAILER-DAEMON@hub.test\r\n"
            b"To: someone-else@example.net\r\n"
            b"Message-ID: <dsn1@hub.test>\r\n"
            b"\r\n"
            b"a bounce\r\n",
            Source.REPLAY,
        )
        assert got.sender == ""
        assert got.recipients == ("u1@corp.test", "u2@corp.test")
        assert got.data == (
            b"From: MAILER-DAEMON@hub.test\r\nTo: someone-else@example.net\r\n"
            b"Message-ID: <dsn1@hub.test>\r\n\r\na bounce\r\n"
        )

    @pytest.mark.parametrize(
        ("raw", "reason"),
        [
            (b"X-Receiver: <b@y.test>\r\n\r\nx\r\n", "exactly one X-Sender"),
            (
                b"X-Sender: <a@x>\r\nX-Sender: <c@x>\r\nX-Receiver: <b@y>\r\n\r\n",
                "exactly one X-Sender",
            ),
            (
                b"X-Sender: <a@x.test>\r\nTo: b@y.test\r\n\r\nx\r\n",
                "no recipients (none in X-Receiver)",
            ),
            (b"X-Sender: <a@x.test>\r\nX-Receiver: <nobody>\r\n\r\n", "X-Receiver: not an address"),
            (b"X-Sender: <a b@x>\r\nX-Receiver: <b@y.test>\r\n\r\n", "X-Sender: not an address"),
        ],
        ids=["no-sender", "two-senders", "no-receiver", "bad-receiver", "bad-sender"],
    )
    def test_refused(self, raw: bytes, reason: str) -> None:
        """A replay file needs one X-Sender and X-Receivers that are addresses."""
        assert reason in refused(raw, Source.REPLAY)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.sampled_from(list(Source)))
def test_any_bytes_give_a_submission_or_a_reason(raw: bytes, source: Source) -> None:
    """Whatever a file holds, reading it never raises: a submission, or a one-line reason."""
    result = read_submission(raw, source, LIMITS, DEFAULT_ID)
    if isinstance(result, Refusal):
        assert "\n" not in result.reason
    else:
        assert b"\x00" not in result.data
        assert result.recipients


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                b"From: ",
                b"To: ",
                b"Bcc: ",
                b"X-Sender: ",
                b"X-Receiver: ",
                b"<",
                b">",
                b"@",
                b'"',
                b",",
                b" ",
                b"a",
                b"\r\n",
                b"\r\n ",
                b"(",
                b")",
                b":",
                b";",
                b"\\",
                b"[",
                b"]",
                b"\xc3\xa9",
            ]
        ),
        max_size=60,
    ),
    st.sampled_from(list(Source)),
)
def test_header_like_bytes(parts: list[bytes], source: Source) -> None:
    """Header-shaped noise (the parser's hard cases) is read or refused, never raised."""
    raw = b"".join(parts) + b"\r\n\r\nbody\r\n"
    result = read_submission(raw, source, LIMITS, DEFAULT_ID)
    assert isinstance(result, Submission | Refusal)
