"""What the session refuses under back pressure, and how a full disk is answered."""

from __future__ import annotations

from hubd import replies
from hubd.backpressure import Level
from hubd.smtp.actions import Failed, ReceiveData, Step
from tests.unit.smtp.harness import OUTSIDER_IP, PEER_IP, new_session
from tests.unit.smtp.test_session import deliver, opened, say, start_data, transaction


class Pressure:
    """A level the test sets, read by the session at each command."""

    def __init__(self, level: Level = Level.NORMAL) -> None:
        self.level = level

    def __call__(self) -> Level:
        return self.level


def test_high_refuses_everyone_at_mail() -> None:
    """At High even a trusted peer gets 452 4.3.1 at MAIL; the session goes on."""
    pressure = Pressure(Level.HIGH)
    session = opened(new_session(client_ip=PEER_IP, pressure=pressure))
    assert say(session, "MAIL FROM:<a@corp.test>") == replies.INSUFFICIENT_RESOURCES
    assert say(session, "RCPT TO:<b@corp.test>") == replies.NEEDS_MAIL
    pressure.level = Level.NORMAL
    transaction(session)


def test_medium_refuses_only_the_unprivileged() -> None:
    """At Medium an outsider is refused and a trusted network or peer is not."""
    pressure = Pressure(Level.MEDIUM)
    outsider = opened(new_session(client_ip=OUTSIDER_IP, pressure=pressure))
    assert say(outsider, "MAIL FROM:<a@outside.test>") == replies.INSUFFICIENT_RESOURCES
    peer = opened(new_session(client_ip=PEER_IP, pressure=pressure))
    assert say(peer, "MAIL FROM:<a@corp.test>") == replies.SENDER_OK


def test_a_rise_after_mail_refuses_at_rcpt() -> None:
    """The level is read again at RCPT: a rise since MAIL refuses before any data."""
    pressure = Pressure()
    session = opened(new_session(pressure=pressure))
    assert say(session, "MAIL FROM:<a@outside.test>") == replies.SENDER_OK
    pressure.level = Level.HIGH
    assert say(session, "RCPT TO:<bob@corp.test>") == replies.INSUFFICIENT_RESOURCES
    assert say(session, "DATA") == replies.NEEDS_RCPT


def test_syntax_errors_still_come_first() -> None:
    """A malformed MAIL is a 5xx syntax error at any level."""
    session = opened(new_session(pressure=Pressure(Level.HIGH)))
    assert say(session, "MAIL FROM:<not an address>") == replies.BAD_SENDER_SYNTAX


def test_full_disk_at_commit_is_452() -> None:
    """A commit that failed for a full disk gets 452 4.3.1, never 250."""
    session = opened()
    transaction(session)
    deliver(session)
    assert session.finish(Failed(no_space=True)) == Step(replies.INSUFFICIENT_RESOURCES)
    transaction(session)


def test_full_spool_during_data_is_452() -> None:
    """DATA that could not be spooled for a full disk ends the transaction with 452."""
    session = opened()
    transaction(session)
    step = start_data(session)
    assert isinstance(step.action, ReceiveData)
    assert session.finish(Failed(no_space=True)) == Step(replies.INSUFFICIENT_RESOURCES)
    transaction(session)
