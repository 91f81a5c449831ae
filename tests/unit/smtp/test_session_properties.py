"""Random command sequences through the session: it never raises, always answers sanely."""

from __future__ import annotations

import dataclasses
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hubd import replies
from hubd.replies import Reply
from hubd.smtp.actions import (
    AckRefused,
    AuthBusy,
    Authenticated,
    AwaitDeparture,
    CheckCredentials,
    Close,
    Commit,
    Committed,
    DataReceived,
    Departed,
    DropTaken,
    Failed,
    ListNotices,
    NotAuthenticated,
    NoticesListed,
    Outcome,
    ReceiveData,
    RegisterUpstream,
    StartTls,
    Step,
    TakenDropped,
    TlsStarted,
    UpstreamRegistered,
)
from hubd.smtp.data import ContentFault, DataSummary
from hubd.smtp.limits import LocalCounters
from hubd.smtp.policy import SubmissionOffer
from hubd.smtp.session import Phase, Session, TimeoutKind
from tests.unit.smtp.harness import OUTSIDER_IP, PEER_IP, Clock, listener_policy, new_session

# What each verb may answer, besides 421 (a limit: then the session closes). 451 is a
# node fault reported by an action; 452 the recipient limit.
SANE: dict[str, set[int]] = {
    "HELO": {250, 501},
    "EHLO": {250, 501},
    "MAIL": {250, 501, 503, 552, 553, 555},
    "RCPT": {250, 452, 501, 503, 550, 553, 555},
    "DATA": {250, 451, 500, 501, 503, 550, 552, 554},
    "RSET": {250, 501},
    "NOOP": {250},
    "QUIT": {221, 501},
    "VRFY": {252, 501, 553, 555},
    "HELP": {214, 504},
    "AUTH": {503},
    "STARTTLS": {502},
    "EXPN": {502},
    "XSHADOW": {250, 451, 501, 503, 550},
    "XQDISCARD": {250, 451, 501, 503},
    "XQTAKEN": {250, 451, 501, 503},
}
UNKNOWN = {500, 502}
_ENHANCED = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")

ADDRESSES = st.sampled_from(
    [
        "<bob@corp.test>",
        "<a@partner.test>",
        "<x@elsewhere.test>",
        "<>",
        "<bü@corp.test>",
        '"',
        "<",
        "<@r.test:bob@corp.test>",
        "bob@corp.test",
        "<b\x00b@corp.test>",
        "<\udcff@corp.test>",
    ]
)
PARAMETERS = st.sampled_from(
    [
        "",
        " SIZE=100",
        " SIZE=999999",
        " SMTPUTF8",
        " BODY=8BITMIME",
        " RET=FULL ENVID=x",
        " NOTIFY=NEVER",
        " ORCPT=rfc822;a@b",
        " XORIGIN=up-1.0123456789abcdef.Q1",
        " XORIGIN=bad",
        " FROB=1",
        " SIZE=1 SIZE=1",
    ]
)
TEXT = st.text(st.characters(codec="utf-8"), max_size=20)


GOOD = st.sampled_from(
    [
        "EHLO client.test",
        "HELO client.test",
        "MAIL FROM:<a@outside.test>",
        "MAIL FROM:<a@up.test> XORIGIN=up-1.0123456789abcdef.Q1",
        "MAIL FROM:<> SMTPUTF8",
        "RCPT TO:<bob@corp.test>",
        "RCPT TO:<b@partner.test> NOTIFY=NEVER",
        "DATA",
        "RSET",
        "NOOP",
        "VRFY bob",
        "HELP",
        "XSHADOW up-1 0123456789abcdef",
        "XQDISCARD 10 ACK=1",
        "XQTAKEN Q1 Q2",
    ]
)


@st.composite
def lines(draw: st.DrawFn) -> bytes:
    """A command line: often a good one, else mangled, else random bytes."""
    kind = draw(st.integers(0, 9))
    if kind >= 5:
        return (draw(GOOD) + "\r\n").encode()
    if kind == 0:
        return draw(st.binary(max_size=80)) + b"\r\n"
    if kind == 1:
        return b"NOOP " + b"x" * draw(st.integers(500, 5000)) + b"\r\n"
    verb = draw(st.sampled_from([*SANE, "BOGUS", "mail", "Rcpt"]))
    if verb.upper() in ("MAIL", "RCPT"):
        keyword = "FROM:" if verb.upper() == "MAIL" else "TO:"
        argument = keyword + draw(ADDRESSES) + draw(PARAMETERS)
    elif verb in ("HELO", "EHLO"):
        argument = draw(st.sampled_from(["client.test", "evil\rX: y", "\x00", "[1.2.3.4]", ""]))
    elif verb == "XSHADOW":
        argument = draw(st.sampled_from(["up-1 0123456789abcdef", "up-1", ""]))
    elif verb == "XQDISCARD":
        argument = draw(st.sampled_from(["10", "10 ACK=2", "ten", ""]))
    else:
        argument = draw(st.sampled_from(["", "Q1 Q2", "bob"]) | TEXT)
    line = f"{verb} {argument}" if argument else verb
    end = draw(st.sampled_from(["\r\n", "\r\n", "\n"]))
    return (line + end).encode("utf-8", "surrogateescape")


TRANSACTION = [b"MAIL FROM:<a@outside.test>\r\n", b"RCPT TO:<bob@corp.test>\r\n", b"DATA\r\n"]
SHADOW_TRANSACTION = [
    b"XSHADOW up-1 0123456789abcdef\r\n",
    b"MAIL FROM:<a@up.test> XORIGIN=up-1.0123456789abcdef.Q1\r\n",
    b"RCPT TO:<bob@corp.test>\r\n",
    b"DATA\r\n",
    b"XQDISCARD 10 ACK=1\r\n",
    b"XQTAKEN Q1\r\n",
]
SCRIPT = st.lists(
    st.one_of(
        lines().map(lambda line: [line]),
        st.just(TRANSACTION),
        st.just(SHADOW_TRANSACTION),
    ),
    min_size=1,
    max_size=25,
).map(lambda parts: [line for part in parts for line in part])


def outcome_for(draw: st.DrawFn, action: object) -> Outcome:
    """A plausible outcome for an action, failures included."""
    if isinstance(action, ReceiveData):
        fault = draw(st.none() | st.sampled_from(list(ContentFault)))
        summary = DataSummary(fault, 10, 0, draw(st.none() | st.just("<m@x>")))
        return DataReceived(summary, b"" if fault else b"Subject: s\r\n\r\nbody\r\n")
    if isinstance(action, Commit):
        return draw(st.sampled_from([Committed(), Failed()]))
    if isinstance(action, AwaitDeparture):
        return Departed(draw(st.booleans()))
    if isinstance(action, RegisterUpstream):
        return draw(st.sampled_from([UpstreamRegistered(), Failed()]))
    if isinstance(action, ListNotices):
        return draw(st.sampled_from([NoticesListed(("Q1",), 3), AckRefused(), Failed()]))
    if isinstance(action, DropTaken):
        return draw(st.sampled_from([TakenDropped(1), Failed()]))
    if isinstance(action, StartTls):
        return TlsStarted("TLSv1.3")
    if isinstance(action, CheckCredentials):
        user = Authenticated("alice", frozenset({"a@outside.test"}))
        return draw(st.sampled_from([user, NotAuthenticated(), AuthBusy(), Failed()]))
    raise AssertionError(f"unexpected action {action!r}")


def check_reply(reply: Reply, allowed: set[int], step: Step) -> None:
    assert 200 <= reply.code < 600
    if reply.code == 421:
        assert isinstance(step.action, Close), "a 421 always closes"
    elif reply != replies.LINE_TOO_LONG:  # any verb's line may be too long
        assert reply.code in allowed, (reply, allowed)
    if reply.enhanced:
        assert _ENHANCED.fullmatch(reply.enhanced)
        assert reply.enhanced[0] == str(reply.code)[0]
    else:
        assert reply.code in (220, 250, 334, 354), reply
    for line in reply.lines():
        assert "\r" not in line
        assert "\n" not in line


def check_invariants(session: Session) -> None:
    limits = session.policy.limits
    assert session.pending is None
    assert (session.transaction is not None) == (session.phase is Phase.MAIL)
    if session.phase in (Phase.READY, Phase.MAIL):
        assert session.helo_name is not None
    if session.transaction is not None:
        assert len(session.transaction.recipients) <= limits.max_recipients
        assert len(session.transaction.recipients) == len(session.transaction.rcpt_params)
    assert session.errors <= limits.max_errors + 1
    assert session.commands <= limits.max_commands + 1
    if session.upstream is not None:
        assert session.client_ip == PEER_IP


def run_command(
    draw: st.DrawFn, session: Session, line: bytes, sane: dict[str, set[int]] = SANE
) -> None:
    """Feed one line; answer every action it leads to; check each reply."""
    verb = line.partition(b" ")[0].strip().upper().decode("ascii", "replace")
    if session.in_auth_exchange:
        verb = "AUTH"
    allowed = sane.get(verb, UNKNOWN) | {354}
    step = session.receive_line(line)
    replies_seen = 0
    while True:
        if step.reply is not None:
            replies_seen += 1
            check_reply(step.reply, allowed, step)
        action = step.action
        if action is None or isinstance(action, Close):
            break
        if isinstance(action, ReceiveData) and draw(st.integers(0, 9)) == 0:
            step = session.timed_out(draw(st.sampled_from(list(TimeoutKind))))
            continue
        step = session.finish(outcome_for(draw, action))
    assert replies_seen >= 1, "every command gets a reply"
    if isinstance(step.action, Close):
        assert session.closed


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.data(), st.sampled_from([OUTSIDER_IP, PEER_IP]), st.booleans())
def test_random_sessions(data: st.DataObject, client_ip: str, delayed: bool) -> None:
    """Any sequence of lines and outcomes: no exception, sane replies, invariants hold."""
    counters = LocalCounters()
    policy = listener_policy(max_ack_delay=5.0 if delayed else None, max_commands=60, max_errors=15)
    session = new_session(policy, client_ip=client_ip, counters=counters, clock=Clock())
    opening = session.open()
    assert opening.reply is not None
    assert opening.reply.code == 220
    script = data.draw(SCRIPT)
    if data.draw(st.integers(0, 4)):
        script.insert(0, b"EHLO client.test\r\n")
    for line in script:
        if session.closed:
            break
        if data.draw(st.integers(0, 30)) == 0:
            step = session.line_too_long()
            assert step.reply is not None
            check_reply(step.reply, {500}, step)
        else:
            run_command(data.draw, session, line)
        if not session.closed:
            check_invariants(session)
    session.connection_lost()
    assert session.closed
    # Every place the session took is given back.
    assert counters.connect("someone").sessions == 1


# On a submission listener, besides SANE: AUTH and STARTTLS work, MAIL needs AUTH first.
SUBMISSION_SANE = SANE | {
    "AUTH": {235, 334, 454, 501, 503, 504, 535, 538},
    "STARTTLS": {220, 501, 502, 503},
    "MAIL": SANE["MAIL"] | {530},
    # No XSHADOW here: its verbs are unknown commands.
    "XSHADOW": UNKNOWN,
    "XQDISCARD": UNKNOWN,
    "XQTAKEN": UNKNOWN,
}
PLAIN = "AGFsaWNlAHNlY3JldA=="  # \0alice\0secret
SUBMISSION_GOOD = st.sampled_from(
    [
        "STARTTLS",
        f"AUTH PLAIN {PLAIN}",
        "AUTH PLAIN",
        PLAIN,
        "AUTH LOGIN",
        "YWxpY2U=",
        "*",
        "AUTH CRAM-MD5",
        "AUTH PLAIN !!",
        "MAIL FROM:<a@outside.test>",
        "MAIL FROM:<b@outside.test>",
    ]
)
LOGIN = [
    b"EHLO client.test\r\n",
    b"STARTTLS\r\n",
    b"EHLO client.test\r\n",
    f"AUTH PLAIN {PLAIN}\r\n".encode(),
    *TRANSACTION,
]
SUBMISSION_SCRIPT = st.lists(
    st.one_of(
        lines().map(lambda line: [line]),
        SUBMISSION_GOOD.map(lambda line: [(line + "\r\n").encode()]),
        st.just(LOGIN),
        st.just(LOGIN),
        st.just(TRANSACTION),
    ),
    min_size=1,
    max_size=25,
).map(lambda parts: [line for part in parts for line in part])


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.data(), st.sampled_from([OUTSIDER_IP, PEER_IP]), st.booleans())
def test_random_submission_sessions(data: st.DataObject, client_ip: str, plaintext: bool) -> None:
    """Any sequence of lines and outcomes on a submission listener (STARTTLS, AUTH): no
    exception, sane replies; no MAIL is accepted before AUTH, nor a sender the user lacks."""
    base = listener_policy(max_commands=60, max_errors=15)
    offer = SubmissionOffer(plaintext, 0.0, 3, 600.0, 5)
    policy = dataclasses.replace(base, shadow=None, starttls=True, submission=offer)
    counters = LocalCounters()
    session = new_session(policy, client_ip=client_ip, counters=counters, clock=Clock())
    session.open()
    for line in [b"EHLO client.test\r\n", *data.draw(SUBMISSION_SCRIPT)]:
        if session.closed:
            break
        run_command(data.draw, session, line, SUBMISSION_SANE)
        if session.closed:
            break
        check_invariants(session)
        if session.transaction is not None:
            assert session.user == "alice"
            assert session.transaction.sender == "a@outside.test"
            if not plaintext:
                assert session.tls is not None
    session.connection_lost()
    assert counters.connect("someone").sessions == 1
