"""STARTTLS, AUTH and who may send as whom, on the session state machine without sockets."""

from __future__ import annotations

import base64
import dataclasses

from hubd import replies
from hubd.replies import Reply
from hubd.smtp.actions import (
    AuthBusy,
    Authenticated,
    CheckCredentials,
    Close,
    Commit,
    DataReceived,
    NotAuthenticated,
    StartTls,
    Step,
    TlsStarted,
)
from hubd.smtp.data import DataSummary
from hubd.smtp.limits import LocalCounters
from hubd.smtp.policy import ListenerPolicy, SubmissionOffer
from hubd.smtp.session import Phase, Session
from tests.unit.smtp.harness import OUTSIDER_IP, PEER_IP, Clock, listener_policy, new_session

OFFER = SubmissionOffer(
    plaintext_auth=False,
    failure_delay=1.0,
    max_failures=3,
    failure_window=600.0,
    max_messages_per_minute_per_user=2,
)
ALICE = Authenticated("alice", frozenset({"alice@corp.test", "a.lias@corp.test"}))


def submission_policy(**offer: object) -> ListenerPolicy:
    return dataclasses.replace(
        listener_policy(),
        shadow=None,
        starttls=True,
        submission=dataclasses.replace(OFFER, **offer),  # type: ignore[arg-type]
    )


def step(session: Session, line: str) -> Step:
    return session.receive_line(line.encode() + b"\r\n")


def say(session: Session, line: str) -> Reply:
    reply = step(session, line).reply
    assert reply is not None
    return reply


def plain(user: str, password: str, authzid: str = "") -> str:
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secured(session: Session | None = None) -> Session:
    """Greeted, STARTTLS done, greeted again."""
    session = session or new_session(submission_policy())
    session.open()
    assert say(session, "EHLO c.test").code == 250
    started = step(session, "STARTTLS")
    assert started.reply == replies.READY_FOR_TLS
    assert isinstance(started.action, StartTls)
    assert session.finish(TlsStarted("TLSv1.3")) == Step()
    assert session.phase is Phase.HELLO
    assert say(session, "EHLO c.test").code == 250
    return session


def logged_in(session: Session | None = None) -> Session:
    session = secured(session)
    asked = step(session, f"AUTH PLAIN {plain('alice', 'secret')}")
    assert asked.action == CheckCredentials("alice", "secret", 1.0)
    assert session.finish(ALICE).reply == replies.AUTH_OK
    return session


class TestOffered:
    def test_relay_listener_has_no_auth(self) -> None:
        """On a relay listener AUTH is not advertised and gets 503 5.5.1."""
        session = new_session()
        session.open()
        assert not any("AUTH" in line for line in say(session, "EHLO c.test").lines())
        assert say(session, f"AUTH PLAIN {plain('a', 'b')}") == replies.AUTH_NOT_OFFERED

    def test_before_tls(self) -> None:
        """Before TLS: STARTTLS offered, AUTH not; AUTH gets 538 5.7.11, MAIL 530 5.7.0."""
        session = new_session(submission_policy())
        session.open()
        lines = say(session, "EHLO c.test").lines()
        assert "250-STARTTLS" in lines
        assert not any("AUTH" in line for line in lines)
        assert say(session, f"AUTH PLAIN {plain('alice', 'secret')}") == replies.AUTH_NEEDS_TLS
        assert say(session, "MAIL FROM:<alice@corp.test>") == replies.AUTH_REQUIRED

    def test_after_tls(self) -> None:
        """After TLS: AUTH PLAIN LOGIN offered, STARTTLS not; HELP lists AUTH."""
        session = secured()
        lines = say(session, "EHLO c.test").lines()
        assert "250-AUTH PLAIN LOGIN" in lines
        assert "250-STARTTLS" not in lines
        assert "AUTH" in say(session, "HELP").text
        assert say(session, "STARTTLS") == replies.TLS_ALREADY

    def test_trusted_network_still_needs_auth(self) -> None:
        """A client in trusted_networks gets 530 5.7.0 at MAIL on a submission listener."""
        session = secured(new_session(submission_policy(), client_ip=PEER_IP))
        assert say(session, "MAIL FROM:<alice@corp.test>") == replies.AUTH_REQUIRED

    def test_plaintext_auth_allowed(self) -> None:
        """allow_plaintext_auth: AUTH offered and accepted without TLS."""
        session = new_session(submission_policy(plaintext_auth=True))
        session.open()
        assert "250-AUTH PLAIN LOGIN" in say(session, "EHLO c.test").lines()
        assert isinstance(step(session, f"AUTH PLAIN {plain('a', 'b')}").action, CheckCredentials)


class TestExchange:
    def test_plain_with_empty_challenge(self) -> None:
        """AUTH PLAIN alone gets "334 "; the response line carries the credentials."""
        session = secured()
        assert say(session, "AUTH PLAIN") == replies.auth_challenge("")
        asked = step(session, plain("alice", "secret"))
        assert asked.action == CheckCredentials("alice", "secret", 1.0)

    def test_login(self) -> None:
        """AUTH LOGIN asks Username: then Password:, in base64."""
        session = secured()
        assert say(session, "AUTH LOGIN").lines() == ["334 VXNlcm5hbWU6"]
        assert say(session, b64("alice")).lines() == ["334 UGFzc3dvcmQ6"]
        assert step(session, b64("secret")).action == CheckCredentials("alice", "secret", 1.0)

    def test_login_with_initial_response(self) -> None:
        """AUTH LOGIN <user> asks only for the password."""
        session = secured()
        assert say(session, f"AUTH LOGIN {b64('alice')}").lines() == ["334 UGFzc3dvcmQ6"]

    def test_cancel_and_garbage(self) -> None:
        """ "*" cancels (501 5.0.0); bad base64, a foreign authzid, an unknown mechanism fail."""
        session = secured()
        say(session, "AUTH PLAIN")
        assert say(session, "*") == replies.AUTH_CANCELLED
        say(session, "AUTH PLAIN")
        assert say(session, "!!not base64!!") == replies.AUTH_BAD_RESPONSE
        assert say(session, f"AUTH PLAIN {plain('alice', 'x', 'bob')}") == (
            replies.AUTH_BAD_RESPONSE
        )
        assert say(session, "AUTH CRAM-MD5") == replies.AUTH_MECHANISM_UNKNOWN
        # Each exchange ended: the session takes commands again.
        assert say(session, "NOOP") == replies.OK

    def test_refused_twice_and_never_in_a_transaction(self) -> None:
        """AUTH after AUTH is out of sequence; and AUTH never comes inside a transaction,
        since MAIL before AUTH starts none."""
        session = logged_in()
        assert say(session, f"AUTH PLAIN {plain('alice', 'secret')}") == replies.AUTH_ALREADY
        assert "AUTH" not in " ".join(say(session, "EHLO c.test").lines())
        fresh = secured()
        assert say(fresh, "MAIL FROM:<alice@corp.test>") == replies.AUTH_REQUIRED
        assert fresh.transaction is None

    def test_busy(self) -> None:
        """A check that could not run (pool full) is a temporary 454 4.7.0."""
        session = secured()
        step(session, f"AUTH PLAIN {plain('alice', 'secret')}")
        assert session.finish(AuthBusy()).reply == replies.AUTH_BUSY
        assert session.user is None


class TestFailures:
    def test_limit_per_client_address(self) -> None:
        """535 5.7.8 per wrong password; past max_failures the address gets 421 4.7.0,
        and another address is not affected."""
        counters = LocalCounters()
        clock = Clock()
        session = secured(new_session(submission_policy(), counters=counters, clock=clock))
        for _ in range(3):
            step(session, f"AUTH PLAIN {plain('alice', 'wrong')}")
            assert session.finish(NotAuthenticated()).reply == replies.AUTH_FAILED
        refused = step(session, f"AUTH PLAIN {plain('alice', 'secret')}")
        assert refused.reply == replies.TOO_MANY_AUTH_FAILURES
        assert isinstance(refused.action, Close)
        session.connection_lost()
        again = secured(new_session(submission_policy(), counters=counters, clock=clock))
        assert say(again, f"AUTH PLAIN {plain('a', 'b')}") == replies.TOO_MANY_AUTH_FAILURES
        again.connection_lost()
        other = secured(new_session(submission_policy(), client_ip="192.0.2.10", counters=counters))
        assert isinstance(step(other, f"AUTH PLAIN {plain('a', 'b')}").action, CheckCredentials)
        clock.now += 601  # the window passed: the address may try again
        later = secured(new_session(submission_policy(), counters=counters, clock=clock))
        assert isinstance(step(later, f"AUTH PLAIN {plain('a', 'b')}").action, CheckCredentials)


class TestSenders:
    def test_own_addresses_only(self) -> None:
        """An authenticated user sends as its addresses (any case), else 553 5.7.1."""
        session = logged_in()
        assert say(session, "MAIL FROM:<mallory@corp.test>") == replies.SENDER_NOT_OWNED
        assert say(session, "MAIL FROM:<>") == replies.SENDER_NOT_OWNED
        assert say(session, "MAIL FROM:<Alice@CORP.test>") == replies.SENDER_OK

    def test_relays_anywhere(self) -> None:
        """An authenticated user may send to any domain."""
        session = logged_in(new_session(submission_policy(), client_ip=OUTSIDER_IP))
        say(session, "MAIL FROM:<alice@corp.test>")
        assert say(session, "RCPT TO:<someone@far.example>") == replies.RECIPIENT_OK

    def test_rate_per_user(self) -> None:
        """Past max_messages_per_minute_per_user, MAIL gets 421 4.7.0."""
        session = logged_in()
        for _ in range(2):
            assert say(session, "MAIL FROM:<alice@corp.test>") == replies.SENDER_OK
            assert say(session, "RSET") == replies.OK
        assert say(session, "MAIL FROM:<alice@corp.test>") == replies.TOO_MANY_MESSAGES_FROM_USER


def commit_of(session: Session, summary: DataSummary) -> Commit:
    say(session, "MAIL FROM:<alice@corp.test>")
    say(session, "RCPT TO:<bob@corp.test>")
    step(session, "DATA")
    action = session.finish(DataReceived(summary, b"Subject: x\r\n\r\nbody\r\n")).action
    assert isinstance(action, Commit)
    return action


class TestHeaders:
    def test_missing_date_and_message_id_added(self) -> None:
        """A submission without Date and Message-ID gets both; Received names TLS and user."""
        message = commit_of(logged_in(), DataSummary(None, 20, 0, None)).message
        trace = message.trace.decode()
        assert "with ESMTPSA id" in trace
        assert "(using TLSv1.3; authenticated as alice)" in trace
        assert "\r\nDate: " in trace
        assert message.message_id is not None
        assert f"\r\nMessage-ID: {message.message_id}\r\n" in trace

    def test_present_ones_kept(self) -> None:
        """A submission that has Date and Message-ID gets neither again."""
        summary = DataSummary(None, 20, 0, "<m@x>", has_date=True)
        message = commit_of(logged_in(), summary).message
        assert b"Date:" not in message.trace
        assert b"Message-ID:" not in message.trace
        assert message.message_id == "<m@x>"

    def test_relay_adds_nothing(self) -> None:
        """On a relay listener nothing but Received is added."""
        session = new_session(client_ip=PEER_IP)
        session.open()
        say(session, "EHLO c.test")
        action = commit_of(session, DataSummary(None, 20, 0, None))
        assert action.message.trace.count(b"\r\n") == 3  # Received: in three folded lines
        assert b"Date:" not in action.message.trace


class TestPostmaster:
    def test_bare_postmaster(self) -> None:
        """RCPT TO:<postmaster> goes to postmaster at the first local domain; a node without
        local domains has no one to give it to (550 5.1.1)."""
        policy = listener_policy()
        with_domain = dataclasses.replace(
            policy, relay=dataclasses.replace(policy.relay, postmaster_domain="corp.test")
        )
        session = new_session(with_domain)
        session.open()
        say(session, "EHLO c.test")
        say(session, "MAIL FROM:<a@outside.test>")
        assert say(session, "RCPT TO:<Postmaster>") == replies.RECIPIENT_OK
        assert session.transaction is not None
        assert session.transaction.recipients == ["postmaster@corp.test"]
        bare = new_session(policy)
        bare.open()
        say(bare, "EHLO c.test")
        say(bare, "MAIL FROM:<a@outside.test>")
        assert say(bare, "RCPT TO:<postmaster>") == replies.NO_SUCH_USER
